"""Benchmarks of hasql-core against the raw driver pools and hasql 0.10, measured in one run.

``python bench/run.py`` (or ``nox -s bench``) runs every scenario; see ``bench/README.md``.
Modules:

- :mod:`hasql_bench.common`: settings of the run, statistics, the environment.
- :mod:`hasql_bench.clients`: the three clients (raw pools, hasql 0.10, hasql-core) for asyncpg and
  psycopg 3, behind one small interface, and the SQL each scenario runs.
- :mod:`hasql_bench.fake_hasql`: hasql 0.10's driver interface over hasql-core's simulated hosts,
  so both managers can be measured on the same 1000 fake hosts.
- :mod:`hasql_bench.overhead`: scenario 1, throughput of acquire + ``SELECT 1`` + release.
- :mod:`hasql_bench.oplog`: operations started on a fixed schedule and their outcome.
- :mod:`hasql_bench.failover`: scenarios 2 to 5 on fresh local clusters.
- :mod:`hasql_bench.monitor_cost`: scenario 6, CPU spent monitoring, and the manager's own cost per
  acquire over the fake driver.
- :mod:`hasql_bench.report`: the Markdown tables, the targets, the JSON and the chart.
"""
