"""Micro-benchmark: what the manager adds to acquire + release, measured against the driver alone.

No network: both clients use the in-process fake driver, so the difference is the manager's own cost
(choosing a host, the deadline, bookkeeping). Rounds of each client are interleaved and the medians
reported, with the ratio manager / driver and the microseconds added per acquire + release.

    python bench/micro.py [--rounds 7] [--ops 20000] [--tasks 1 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from hasql_core import PoolManager
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver, FakePool

POOL = {"min_size": 10, "max_size": 10}


async def _run(op: Callable[[], Awaitable[None]], ops: int, tasks: int) -> float:
    per_task = ops // tasks

    async def worker() -> None:
        for _ in range(per_task):
            await op()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return per_task * tasks / (time.perf_counter() - started)


async def measure(rounds: int, ops: int, tasks: int) -> dict[str, float]:
    cluster = FakeCluster(3)
    driver = FakeDriver(cluster)
    pool = driver.create_pool(PoolManager(cluster.dsn, driver=driver).dsn[0], POOL)
    await driver.open_pool(pool)
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs=POOL)
    await pm.ready(masters_count=1, replicas_count=2)

    async def raw() -> None:
        conn = await driver.acquire(pool, None)
        await driver.release(pool, conn)

    async def managed() -> None:
        async with pm.acquire_master():
            pass

    async def managed_read() -> None:
        async with pm.acquire_replica():
            pass

    results: dict[str, list[float]] = {"driver": [], "manager (writes)": [], "manager (reads)": []}
    for _ in range(rounds):
        results["driver"].append(await _run(raw, ops, tasks))
        results["manager (writes)"].append(await _run(managed, ops, tasks))
        results["manager (reads)"].append(await _run(managed_read, ops, tasks))
    await pm.close()
    assert isinstance(pool, FakePool)
    return {name: statistics.median(values) for name, values in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 100])
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    rows = []
    print("| tasks | client | acquire+release/s (median) | ratio to driver | µs added per op |")
    print("|---|---|---|---|---|")
    for tasks in args.tasks:
        medians = asyncio.run(measure(args.rounds, args.ops, tasks))
        base = medians["driver"]
        for name, rate in medians.items():
            added = (1 / rate - 1 / base) * 1e6
            rows.append(
                {
                    "tasks": tasks,
                    "client": name,
                    "ops_per_s": rate,
                    "ratio": rate / base,
                    "us_added": added,
                }
            )
            print(f"| {tasks} | {name} | {rate:,.0f} | {rate / base:.2f} | {added:.1f} |")
    args.out.mkdir(exist_ok=True)
    (args.out / "micro.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
