"""Scenario 6, CPU spent monitoring, and the manager's own cost per acquire (no network).

Monitor cost: ``time.process_time()`` over a window of wall time while a manager sits idle (its
monitor probing every host each ``refresh_delay`` = 1 s), minus the same window with no manager,
measured in the same round; the rounds interleave "no manager", hasql 0.10 and hasql-core. Reported
as CPU microseconds per host per second of wall time. Real hosts: the 3 nodes of a local cluster
through each driver. Simulated hosts: 1000 hosts of hasql-core's fake driver (and, for hasql 0.10,
hasql's driver interface over the same fake hosts, see :mod:`hasql_bench.fake_hasql`).

Manager-only cost: both managers and the bare fake pool over the fake driver, ``acquire`` +
``release`` with nothing in between, so the difference is each manager's own work per operation.
This is the micro-benchmark ``bench/run.py`` used to be.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hasql_core import PoolManager
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

from .clients import CoreClient, HasqlClient, Target
from .common import CORE, HASQL, RAW, RunConfig, median, rotate
from .fake_hasql import fake_hasql_manager

NO_MANAGER = "no manager"
#: Opens a manager and returns the coroutine function that closes it.
Opener = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


async def _cpu_window(opener: Opener | None, settle: float, window: float) -> float:
    """CPU seconds per wall second of this process over ``window``, with the manager idle."""
    close = None
    if opener is not None:
        close = await opener()
        await asyncio.sleep(settle)
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.sleep(window)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if close is not None:
        await close()
    return cpu / wall


async def _cpu_rounds(
    openers: dict[str, Opener | None], hosts: int, rounds: int, settle: float, window: float
) -> dict[str, Any]:
    samples: dict[str, list[float]] = {name: [] for name in openers}
    names = list(openers)
    for round_no in range(rounds):
        for name in rotate(names, round_no):
            samples[name].append(await _cpu_window(openers[name], settle, window))
    out: dict[str, Any] = {"hosts": hosts, "window": window, "rounds": rounds, "clients": {}}
    for name in names:
        if name == NO_MANAGER:
            continue
        extra = [v - b for v, b in zip(samples[name], samples[NO_MANAGER], strict=True)]
        out["clients"][name] = {
            "cpu_us_per_host_per_s": median(x / hosts * 1e6 for x in extra),
            "cpu_share_of_a_core": median(extra),
            "samples_cpu_per_s": samples[name],
        }
    out["baseline_cpu_per_s"] = samples[NO_MANAGER]
    return out


async def real_hosts(driver: str, target: Target, config: RunConfig) -> dict[str, Any]:
    """CPU of each manager idling over the 3 real hosts, through ``driver``."""

    def opener(make: Callable[[], Any]) -> Opener:
        async def open_client() -> Callable[[], Awaitable[None]]:
            client = make()
            await client.open(target)
            return client.close  # type: ignore[no-any-return]

        return open_client

    openers: dict[str, Opener | None] = {
        NO_MANAGER: None,
        HASQL: opener(lambda: HasqlClient(driver)),
        CORE: opener(lambda: CoreClient(driver)),
    }
    hosts = 1 + len(target.replicas)
    result = await _cpu_rounds(
        openers, hosts, config.cpu_rounds, config.cpu_settle, config.cpu_window
    )
    result["driver"] = driver
    return result


async def fake_hosts(config: RunConfig) -> dict[str, Any]:
    """CPU of each manager idling over ``config.fake_hosts`` simulated hosts (fake driver)."""
    hosts = config.fake_hosts
    pool = {"min_size": 1, "max_size": 1}
    ready_times: dict[str, list[float]] = {HASQL: [], CORE: []}

    async def open_hasql() -> Callable[[], Awaitable[None]]:
        cluster = FakeCluster(hosts)
        started = time.perf_counter()
        pm = fake_hasql_manager(cluster, pool_factory_kwargs=dict(pool))
        await pm.ready(masters_count=1, replicas_count=hosts - 1, timeout=120)
        ready_times[HASQL].append(time.perf_counter() - started)
        close: Callable[[], Awaitable[None]] = pm.close
        return close

    async def open_core() -> Callable[[], Awaitable[None]]:
        cluster = FakeCluster(hosts)
        started = time.perf_counter()
        pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs=pool)
        await pm.ready(masters_count=1, replicas_count=hosts - 1, timeout=120)
        ready_times[CORE].append(time.perf_counter() - started)
        return pm.close

    openers: dict[str, Opener | None] = {NO_MANAGER: None, HASQL: open_hasql, CORE: open_core}
    result = await _cpu_rounds(
        openers, hosts, config.fake_rounds, config.cpu_settle, config.fake_window
    )
    result["driver"] = "fake"
    result["ready_seconds"] = {name: median(values) for name, values in ready_times.items()}
    return result


# -- manager-only cost per acquire ------------------------------------------------------------------


async def _rate(op: Callable[[], Awaitable[None]], ops: int, tasks: int) -> float:
    per_task = max(ops // tasks, 1)

    async def worker() -> None:
        for _ in range(per_task):
            await op()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)


#: The micro cells of hasql-core with acquire stats enabled (not named after CORE: the report
#: compares every CORE row with hasql 0.10's).
STATS = "acquire stats enabled"


async def micro(config: RunConfig) -> list[dict[str, Any]]:
    """acquire + release per second: bare fake pool, hasql 0.10 and hasql-core (writes, reads)."""
    pool_options = {"min_size": 10, "max_size": 10}
    cluster = FakeCluster(3)
    driver = FakeDriver(cluster)
    core = PoolManager(cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs=pool_options)
    # The same with acquire stats counted, as an exporter (hasql-opentelemetry) enables them.
    stats = PoolManager(cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs=pool_options)
    stats.enable_acquire_stats()
    hasql = fake_hasql_manager(cluster, pool_factory_kwargs=dict(pool_options))
    hasql_close: Callable[[], Awaitable[None]] = hasql.close
    await core.ready(masters_count=1, replicas_count=2)
    await stats.ready(masters_count=1, replicas_count=2)
    await hasql.ready(masters_count=1, replicas_count=2)
    bare = driver.create_pool(core.dsn[0], pool_options)
    await driver.open_pool(bare)

    async def raw() -> None:
        conn = await driver.acquire(bare, None)
        await driver.release(bare, conn)

    async def core_write() -> None:
        async with core.acquire_master():
            pass

    async def core_read() -> None:
        async with core.acquire_replica():
            pass

    async def stats_write() -> None:
        async with stats.acquire_master():
            pass

    async def stats_read() -> None:
        async with stats.acquire_replica():
            pass

    async def hasql_write() -> None:
        async with hasql.acquire_master():
            pass

    async def hasql_read() -> None:
        async with hasql.acquire_replica():
            pass

    cells: dict[str, Callable[[], Awaitable[None]]] = {
        f"{RAW} (fake pool)": raw,
        f"{HASQL} (writes)": hasql_write,
        f"{HASQL} (reads)": hasql_read,
        f"{CORE} (writes)": core_write,
        f"{CORE} (reads)": core_read,
        f"{STATS} (writes)": stats_write,
        f"{STATS} (reads)": stats_read,
    }
    rows = []
    try:
        for tasks in config.overhead_tasks:
            samples: dict[str, list[float]] = {name: [] for name in cells}
            for round_no in range(config.micro_rounds):
                for name in rotate(list(cells), round_no):
                    samples[name].append(await _rate(cells[name], config.micro_ops, tasks))
            base = median(samples[f"{RAW} (fake pool)"]) or 1.0
            for name, values in samples.items():
                rate = median(values) or 0.0
                rows.append(
                    {
                        "tasks": tasks,
                        "client": name,
                        "ops_per_s": rate,
                        "ratio_to_raw": rate / base,
                        "us_added": (1 / rate - 1 / base) * 1e6 if rate else None,
                    }
                )
    finally:
        await core.close()
        await stats.close()
        await hasql_close()
    return rows
