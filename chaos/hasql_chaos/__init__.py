"""A chaos matrix for hasql-core: faults x drivers x repetitions against real local clusters.

``python chaos/run.py`` (or ``nox -s chaos``) runs it; see ``chaos/README.md``. Modules:

- :mod:`hasql_chaos.settings`: durations of a run, the bounds every invariant is checked against.
- :mod:`hasql_chaos.drivers`: which drivers are installed, and the SQL each one runs.
- :mod:`hasql_chaos.workload`: application-style writer and reader loops, each operation recorded,
  and the watchdog that reports an operation stuck beyond its bounds.
- :mod:`hasql_chaos.faults`: one script per matrix row (crash, freeze, split brain, proxy faults,
  paused replay, every host down, switchover, rejoin) and the record of what it did when.
- :mod:`hasql_chaos.capture`: every log record of the run, searched for the password.
- :mod:`hasql_chaos.procs`: the cluster's server processes, to prove none is left.
- :mod:`hasql_chaos.cell`: one run of one cell: cluster, manager, load, fault, teardown, checks.
- :mod:`hasql_chaos.checks`: the invariants, evaluated over one run's records.
- :mod:`hasql_chaos.report`: the matrix as Markdown and JSON.
"""
