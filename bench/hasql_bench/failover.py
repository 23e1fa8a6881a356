"""Scenarios 2 to 5: a fault in a fresh local cluster (primary ``node0``, replicas ``node1`` and
``node2``) while operations run through one client on a fixed schedule.

- ``crash``: a write every 10 ms; ``kill -9`` of the primary, ``node1`` promoted 0.5 s later, ``node2``
  re-pointed to it.
- ``frozen_primary``: the same with SIGSTOP instead of the kill.
- ``frozen_replica``: a read every 5 ms on replicas, each statement bounded by 2 s; ``node1`` frozen.
- ``lagging_replica``: replay paused on ``node1`` while a separate connection updates a heartbeat row
  on the primary every 10 ms; a read every 5 ms on replicas returns the age of the heartbeat it sees.

Each run builds its own cluster (well under a second), opens the client, runs ``baseline`` seconds of
normal load, injects the fault and keeps going for the scenario's window. Times are taken with the
monotonic clock (the event loop's ``loop.time()``), also inside the worker threads that drive the
cluster, so "promotion" is the instant the promote request was made.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import time
from collections.abc import Callable
from typing import Any

import asyncpg

from hasql_core.testing.cluster import LocalCluster

from .clients import Client, CoreClient, HasqlClient, Sql, Target, sql_for
from .common import RunConfig
from .oplog import HUNG, Op, OpLog

SCENARIOS = ("crash", "frozen_primary", "frozen_replica", "lagging_replica")
WRITE_INTERVAL = 0.010
READ_INTERVAL = 0.005
READ_STATEMENT_TIMEOUT = 2.0
PROMOTE_AFTER = 0.5
#: The lag limit of scenario 5, for hasql-core's ``max_lag`` and hasql's staleness policy.
MAX_LAG = 1.0
BIN = 0.1

SETUP_SQL = (
    "CREATE TABLE bench_heartbeat (id int PRIMARY KEY, ts timestamptz NOT NULL); "
    "INSERT INTO bench_heartbeat VALUES (1, clock_timestamp())"
)
WRITE_SQL = "UPDATE bench_heartbeat SET ts = clock_timestamp() WHERE id = 1"
READ_SQL = (
    "SELECT extract(epoch FROM clock_timestamp() - ts)::float8 FROM bench_heartbeat WHERE id = 1"
)


def clients_for(scenario: str, driver: str) -> list[Client]:
    """The clients a scenario compares (the raw pools do not route, so they are not among them)."""
    if scenario != "lagging_replica":
        return [HasqlClient(driver), CoreClient(driver)]
    from hasql.staleness import StalenessPolicy, TimeStalenessChecker

    policy = StalenessPolicy(TimeStalenessChecker(datetime.timedelta(seconds=MAX_LAG)))
    return [
        HasqlClient(driver),
        HasqlClient(driver, variant=f"staleness {MAX_LAG:g} s", staleness=policy),
        CoreClient(driver, variant=f"max_lag {MAX_LAG:g} s", max_lag=MAX_LAG),
    ]


def window_of(scenario: str, config: RunConfig) -> float:
    """Seconds a scenario keeps running after its fault."""
    return {
        "crash": config.crash_window,
        "frozen_primary": config.frozen_primary_window,
        "frozen_replica": config.frozen_replica_window,
        "lagging_replica": config.lag_window,
    }[scenario]


class _Timed:
    """Runs blocking cluster operations in a thread and records when each one was requested."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.events: dict[str, float] = {}

    async def do(self, name: str, action: Callable[[], None]) -> None:
        def run() -> None:
            self.events[name] = time.monotonic()
            action()
            self.events[f"{name} done"] = time.monotonic()

        await asyncio.to_thread(run)


def _write_body(client: Client, sql: Sql) -> Callable[[Op], Any]:
    async def write(op: Op) -> None:
        async with client.master() as conn:
            op.acquired, op.port = time.monotonic(), sql.port(conn)
            await sql.write(conn, WRITE_SQL)

    return write


def _read_body(client: Client, sql: Sql) -> Callable[[Op], Any]:
    async def read(op: Op) -> None:
        async with client.replica() as conn:
            op.acquired, op.port = time.monotonic(), sql.port(conn)
            async with asyncio.timeout(READ_STATEMENT_TIMEOUT):
                op.value = await sql.fetch_value(conn, READ_SQL)

    return read


async def _heartbeat(target: Target, stop: asyncio.Event) -> None:
    """Scenario 5's writer: a plain connection to the primary, one update every 10 ms."""
    conn = await asyncpg.connect(
        host="127.0.0.1",
        port=target.primary,
        user=target.user,
        password=target.password,
        database=target.database,
    )
    try:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while not stop.is_set():
            await conn.execute(WRITE_SQL)
            due = max(due + WRITE_INTERVAL, loop.time() - WRITE_INTERVAL)
            await asyncio.sleep(max(due - loop.time(), 0.0))
    finally:
        conn.terminate()


async def _run(
    scenario: str, cluster: LocalCluster, client: Client, config: RunConfig, phase: float
) -> dict[str, Any]:
    target = Target.of(cluster)
    nodes = cluster.nodes
    sql = sql_for(client.driver)
    timed = _Timed(cluster)
    log = OpLog(config.hung_after)
    loop = asyncio.get_running_loop()
    stop_heartbeat = asyncio.Event()
    heartbeat: asyncio.Task[None] | None = None
    await client.open(target)
    try:
        if scenario in ("crash", "frozen_primary"):
            log.start_ticker(_write_body(client, sql), WRITE_INTERVAL)
        else:
            if scenario == "lagging_replica":
                heartbeat = asyncio.ensure_future(_heartbeat(target, stop_heartbeat))
            log.start_ticker(_read_body(client, sql), READ_INTERVAL)
        await asyncio.sleep(config.baseline + phase)

        if scenario == "crash":
            await timed.do("fault", lambda: cluster.kill(nodes[0]))
        elif scenario == "frozen_primary":
            await timed.do("fault", lambda: cluster.freeze(nodes[0]))
        elif scenario == "frozen_replica":
            await timed.do("fault", lambda: cluster.freeze(nodes[1]))
        else:
            await timed.do("fault", lambda: cluster.pause_replay(nodes[1]))
        fault = timed.events["fault"]
        if scenario in ("crash", "frozen_primary"):
            await asyncio.sleep(max(fault + PROMOTE_AFTER - loop.time(), 0.0))
            await timed.do("promote", lambda: cluster.promote(nodes[1]))
            await timed.do("repoint", lambda: cluster.repoint(nodes[2], nodes[1]))
        await asyncio.sleep(max(fault + window_of(scenario, config) - loop.time(), 0.0))
        end = loop.time()
        await log.stop()
    finally:
        stop_heartbeat.set()
        if heartbeat is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(heartbeat, 2)
        # Stopping the servers first makes every call stuck on a frozen host fail at once.
        await asyncio.to_thread(cluster.close)
        await log.abandon(2.0)
        try:
            await asyncio.wait_for(client.terminate(), 5)
        except Exception as error:
            print(f"    ({client.label}: terminate failed: {type(error).__name__})")
    return _analyse(scenario, log, timed.events, end, target, client, config)


def run_once(scenario: str, client: Client, config: RunConfig, phase: float) -> dict[str, Any]:
    """One run of ``scenario`` through ``client`` on a fresh cluster; returns its figures.

    The fault comes ``baseline + phase`` seconds after the client is ready. Both managers probe
    every host once per ``refresh_delay`` (1 s) counted from about when they became ready, so
    ``phase`` places the fault within the probe cycle: without it every fault would land just
    after a probe and every run would show the same, worst-case, detection delay.
    """
    cluster = LocalCluster(replicas=2)
    try:
        cluster.start()
        cluster.execute(cluster.primary, SETUP_SQL)
        cluster.wait_replayed()
        limit = config.baseline + phase + window_of(scenario, config) + config.hung_after + 40
        run = _run(scenario, cluster, client, config, phase)
        result = asyncio.run(asyncio.wait_for(run, limit))
        result["phase"] = phase
        return result
    finally:
        cluster.close()


# -- analysis -----------------------------------------------------------------------------------------


def _timeline(
    ops: list[Op], zero: float, start: float, end: float, bad: Callable[[Op], bool]
) -> dict[str, list[float]]:
    """Good and bad operations per bin (by the time they ended), relative to ``zero``."""
    bins = int((end - start) / BIN)  # whole bins only: a partial last bin would read as a drop
    good, failed = [0] * bins, [0] * bins
    for op in ops:
        if op.end is None or op.end < start or op.end >= start + bins * BIN:
            continue
        index = int((op.end - start) / BIN)
        if bad(op):
            failed[index] += 1
        else:
            good[index] += 1
    return {
        "t": [round(start - zero + i * BIN, 3) for i in range(bins)],
        "ok": [g / BIN for g in good],
        "failed": [f / BIN for f in failed],
    }


def _analyse(
    scenario: str,
    log: OpLog,
    events: dict[str, float],
    end: float,
    target: Target,
    client: Client,
    config: RunConfig,
) -> dict[str, Any]:
    fault = events["fault"]
    ops = [op for op in log.ops if op.end is not None and op.outcome]
    after = [op for op in ops if op.ended >= fault]
    errors: dict[str, int] = {}
    for op in after:
        if not op.ok:
            errors[op.outcome] = errors.get(op.outcome, 0) + 1
    result: dict[str, Any] = {
        "client": client.label,
        "driver": client.driver,
        "events": {name: round(at - fault, 4) for name, at in events.items()},
        "window": round(end - fault, 3),
        "ops_after_fault": len(after),
        "failed": sum(1 for op in after if not op.ok),
        "errors": errors,
        "hung": sum(1 for op in after if op.outcome == HUNG),
        "longest": max((op.duration for op in after), default=None),
        "longest_is_hung": any(op.outcome == HUNG for op in after),
    }
    faulty = target.replicas[0] if scenario in ("frozen_replica", "lagging_replica") else None
    if scenario in ("crash", "frozen_primary"):
        promote = events["promote"]
        new_primary = target.replicas[0]
        first = min(
            (op.ended for op in ops if op.ok and op.port == new_primary and op.ended >= promote),
            default=None,
        )
        result["first_write_after_promotion"] = None if first is None else first - promote
        faulty = target.primary
    failed_starts = [op.start for op in after if not op.ok]
    result["failing_until"] = max(failed_starts) - fault if failed_starts else 0.0
    if faulty is not None:
        handed = [
            at
            for op in ops
            if op.port == faulty and (at := op.acquired) is not None and at >= fault
        ]
        result["last_handed_out_faulty"] = max(handed) - fault if handed else 0.0
        result["handed_out_faulty"] = len(handed)
    if scenario in ("frozen_primary", "frozen_replica"):
        # Every failure here is the frozen host's doing: an operation stuck on one of its
        # connections or waiting for its exhausted pool. So the host stopped getting operations
        # at the later of its last connection handed out and the start of the last failure.
        result["last_routed_faulty"] = max(
            result["last_handed_out_faulty"], result["failing_until"]
        )

    limit = MAX_LAG if scenario == "lagging_replica" else None

    def bad(op: Op) -> bool:
        """A failed operation, or (scenario 5) a read served beyond the lag limit."""
        return not op.ok or (limit is not None and op.value is not None and op.value > limit)

    if scenario == "lagging_replica":
        served = [op for op in after if op.ok and op.start >= fault]
        beyond = [op for op in served if op.value is not None and op.value > MAX_LAG]
        result["reads_served"] = len(served)
        result["reads_beyond_limit"] = len(beyond)
        result["share_beyond_limit"] = len(beyond) / len(served) if served else None
        result["max_age_served"] = max((op.value for op in served if op.value), default=None)

    result["timeline"] = _timeline(ops, fault, fault - config.baseline, end, bad)
    result["settings"] = client.settings()
    return result
