"""One run of one matrix cell: a fresh cluster, a manager, the load, the fault, the teardown.

Order of a run:

1. a fresh proxied cluster (primary + 2 replicas, node1 synchronous unless the row says otherwise,
   ``track_commit_timestamp`` on) with a password of its own, and the table of writes;
2. a :class:`~hasql_core.PoolManager` over the proxied multi-host DSN, ``application_name`` set;
3. ``baseline`` s of load, the fault script, ``tail`` s of load;
4. the workers stopped (each finishes its operation within its bound or is cancelled);
5. ``close()`` with the faults still in place (bounded by ``CLOSE_BOUND``);
6. faults healed; asyncio tasks left, the application's backends left in ``pg_stat_activity``,
   and the acknowledged writes on the final primary checked;
7. the cluster torn down and its server processes checked gone.

Every log record of the run is captured and searched for the password. The run is guarded by a
watchdog: past its limit the run is cancelled (and reported), and a timer thread tears the cluster
down if even that does not end it, so that nothing waits on a frozen server forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import time
from pathlib import Path
from typing import Any

from hasql_core import PoolManager
from hasql_core.errors import ClusterError
from hasql_core.testing.cluster import LocalCluster

from . import procs
from . import settings as S
from .capture import Capture, find_secret, write_masked
from .checks import RunData, evaluate
from .drivers import SCHEMA_SQL, STATEMENT_PREFIXES, DriverSql, sql_for
from .faults import Fault, HarnessError, Scenario
from .workload import HostNames, Workload, describe_error

_BACKENDS_SQL = (
    "SELECT pid, coalesce(state, ''), backend_type, "
    "left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 60) "
    f"FROM pg_stat_activity WHERE application_name = '{S.APPLICATION_NAME}'"
)


def run_limit(settings: S.Settings) -> float:
    """Seconds after which a run is cancelled by its watchdog (far beyond a healthy run)."""
    script = (
        settings.baseline
        + settings.promote_after
        + settings.hold
        + settings.down
        + 2 * settings.after_promotion
        + settings.tail
    )
    teardown = S.OPERATION_BOUND + 3 + S.CLOSE_BOUND + S.BACKEND_EXIT_WAIT
    return script + teardown + 60.0


def _cluster(fault: Fault, password: str) -> LocalCluster:
    return LocalCluster(
        replicas=2,
        user=S.USER,
        password=password,
        database=S.DATABASE,
        synchronous_replica=0 if fault.synchronous else None,
        proxied=True,
        settings={"track_commit_timestamp": "on"},
    )


def _app_backends(cluster: LocalCluster) -> dict[str, list[str]]:
    """The application's backends per running node, polled until none is left or the wait ends."""
    deadline = time.monotonic() + S.BACKEND_EXIT_WAIT
    while True:
        found: dict[str, list[str]] = {}
        for node in cluster.nodes:
            if node.state != "running":
                continue
            try:
                rows = cluster.execute(node, _BACKENDS_SQL, timeout=5)
            except ClusterError as error:
                found[node.name] = [f"pg_stat_activity not readable: {error}"]
                continue
            if rows:
                found[node.name] = [f"pid {r[0]} {r[2]} {r[1]}: {r[3]}" for r in rows]
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


def _count_backends(cluster: LocalCluster) -> dict[str, int]:
    """The application's backends per running node (to show the close check can see them)."""
    counts: dict[str, int] = {}
    for node in cluster.nodes:
        if node.state == "running":
            rows = cluster.execute(node, _BACKENDS_SQL, timeout=5)
            counts[node.name] = len(rows)
    return counts


def _read_back(cluster: LocalCluster, data: RunData) -> None:
    """The ids (and, for the max_lag row, commit times) of the rows on the final primary."""
    primary = cluster.primary
    data.final_primary = primary.name
    try:
        rows = cluster.execute(primary, "SELECT id FROM chaos_writes")
        data.rows_on_final_primary = {int(row[0]) for row in rows}
        if data.fault.max_lag is not None:
            commits = cluster.execute(
                primary,
                "SELECT extract(epoch FROM pg_xact_commit_timestamp(xmin))::float8 "
                "FROM chaos_writes ORDER BY 1",
            )
            data.commit_times = [float(row[0]) for row in commits if row[0]]
    except ClusterError as error:
        data.harness_errors.append(f"reading the writes back on {primary.name}: {error}")


async def _left_tasks(before: set[asyncio.Task[Any]]) -> list[str]:
    """Tasks that did not exist before the manager was made and still run (after a short wait)."""
    deadline = time.monotonic() + S.TASK_EXIT_WAIT
    while True:
        current = asyncio.current_task()
        left = [t for t in asyncio.all_tasks() if t not in before and t is not current]
        if not left or time.monotonic() >= deadline:
            return [_describe_task(t) for t in left]
        await asyncio.sleep(0.05)


def _describe_task(task: asyncio.Task[Any]) -> str:
    """The task's name and coroutine; the application's own statements are marked as such (a
    statement that outlives close() is the driver not ending it when it was cancelled)."""
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    mine = getattr(coro, "__module__", "") == DriverSql.__module__ or name.startswith(
        STATEMENT_PREFIXES
    )
    text = f"{task.get_name()}: {name}"
    return text + " (a statement of the application, still running)" if mine else text


async def _body(
    data: RunData,
    cluster: LocalCluster,
    settings: S.Settings,
    idents: set[procs.Ident],
    texts: list[str],
    limit: float,
) -> None:
    fault = data.fault
    sql = sql_for(data.driver)
    names = HostNames()
    scenario = Scenario(cluster, settings, names)
    scenario.on_step = lambda: idents.update(procs.snapshot(cluster))
    data.scenario = scenario
    before = asyncio.all_tasks()
    dsn = sql.dsn(f"{cluster.proxied_dsn}?application_name={S.APPLICATION_NAME}")
    pm = PoolManager(
        dsn,
        driver=sql.driver,
        acquire_timeout=S.ACQUIRE_TIMEOUT,
        refresh_delay=S.REFRESH_DELAY,
        refresh_timeout=S.REFRESH_TIMEOUT,
        close_timeout=S.CLOSE_TIMEOUT,
        max_lag=fault.max_lag,
        pool_factory_kwargs=sql.pool_options(S.POOL_SIZE),
    )
    workload: Workload | None = None
    try:
        try:
            await pm.ready(masters_count=1, replicas_count=2, timeout=15)
        except Exception as error:
            texts.append(describe_error(error))
            data.harness_errors.append(f"the manager was not ready: {describe_error(error)}")
            return
        workload = Workload(pm, sql, names, settings)
        workload.start(longest=limit)
        try:
            await asyncio.sleep(settings.baseline)
            try:
                seen = await asyncio.to_thread(_count_backends, cluster)
            except ClusterError as error:
                raise HarnessError(f"counting the application's backends: {error}") from error
            data.backends_during_load = seen
            if not sum(seen.values()):
                raise HarnessError(
                    f"no backend with application_name {S.APPLICATION_NAME!r} during the load: "
                    "the check after close() would prove nothing"
                )
            await fault.script(scenario)
            await asyncio.sleep(settings.tail)
        except HarnessError as error:
            data.harness_errors.append(str(error))
    finally:
        if workload is not None:
            await workload.stop()
            data.ops, data.overruns = workload.ops, workload.overruns
            data.unstoppable = workload.unstoppable
        try:
            texts.extend([repr(pm), repr(pm.host_states()), repr(pm.metrics())])
        except Exception as error:
            texts.append(describe_error(error))
        started = time.monotonic()
        try:
            await asyncio.wait_for(pm.close(), S.CLOSE_BOUND)
        except asyncio.TimeoutError:
            data.close_error = f"did not return within {S.CLOSE_BOUND:g} s"
        except Exception as error:
            texts.append(describe_error(error))
            data.close_error = f"raised {describe_error(error)}"
        data.close_duration = time.monotonic() - started
        await scenario.heal_all()
        data.leftover_tasks = await _left_tasks(before)
        data.app_backends = await asyncio.to_thread(_app_backends, cluster)
        await asyncio.to_thread(_read_back, cluster, data)
        for event in scenario.events:
            if event.error is not None and event.label.startswith("teardown"):
                data.harness_errors.append(f"{event.label}: {event.error}")


async def _guarded(
    data: RunData,
    cluster: LocalCluster,
    settings: S.Settings,
    idents: set[procs.Ident],
    texts: list[str],
    limit: float,
) -> None:
    """:func:`_body` under the run's watchdog."""
    task = asyncio.ensure_future(_body(data, cluster, settings, idents, texts, limit))
    done, _ = await asyncio.wait({task}, timeout=limit)
    if not done:
        data.cell_timed_out = True
        task.cancel()
        await asyncio.wait({task}, timeout=30.0)
    if task.done() and not task.cancelled() and task.exception() is not None:
        error = task.exception()
        assert error is not None
        data.harness_errors.append(f"the run failed: {describe_error(error)}")


def _emergency(cluster: LocalCluster) -> None:
    print("    (watchdog: the run is stuck; tearing the cluster down)", flush=True)
    cluster.close()


def run_cell(
    fault: Fault, driver: str, settings: S.Settings, run: int, log_path: Path | None
) -> dict[str, Any]:
    """One run of ``fault`` with ``driver``; returns :func:`~hasql_chaos.checks.evaluate`'s
    result. Never raises for a failure of the cluster or the library: those are reported."""
    started = time.monotonic()
    password = "Chaos" + secrets.token_hex(12)
    data = RunData(fault=fault, driver=driver, run=run)
    capture = Capture()
    capture.install()
    texts: list[str] = []
    idents: set[procs.Ident] = set()
    cluster = _cluster(fault, password)
    limit = run_limit(settings)
    timer = threading.Timer(limit + 30.0, _emergency, (cluster,))
    timer.daemon = True
    try:
        try:
            cluster.start()
            cluster.execute(cluster.primary, SCHEMA_SQL)
            cluster.wait_replayed()
            idents |= procs.snapshot(cluster)
        except Exception as error:  # a cluster that cannot start says nothing about the library
            data.harness_errors.append(f"cluster start: {type(error).__name__}: {error}")
        else:
            timer.start()
            try:
                asyncio.run(_guarded(data, cluster, settings, idents, texts, limit))
            except Exception as error:
                data.harness_errors.append(f"the run failed: {describe_error(error)}")
    finally:
        timer.cancel()
        with contextlib.suppress(Exception):
            idents |= procs.snapshot(cluster)
        cluster.close()
        capture.remove()
    deadline = time.monotonic() + 2.0
    while procs.alive(idents) and time.monotonic() < deadline:
        time.sleep(0.05)
    data.leftover_processes = [procs.describe(i) for i in procs.alive(idents)]
    data.processes_seen = len(idents)
    texts.extend(op.error for op in data.ops if op.error)
    data.log_records = len(capture.lines)
    data.secret_hits, data.secret_examples = find_secret([*capture.lines, *texts], password)
    if log_path is not None:
        write_masked(log_path, capture.lines, password)
    data.duration = time.monotonic() - started
    return evaluate(data)
