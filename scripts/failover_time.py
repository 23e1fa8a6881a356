"""Measure the time from a promotion to the first successful write through a PoolManager.

Builds a local cluster (primary + 2 replicas), writes every 10 ms through ``acquire_master()`` with
the manager's default settings, kills the primary with SIGKILL, promotes node1 0.5 s later and
re-points node2, then reports how long after the promotion returned the first write succeeded, and
how many writes failed. Repeats ``--runs`` times and prints each run and the median.

    python scripts/failover_time.py --driver asyncpg --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from hasql_core import PoolManager
from hasql_core.testing.cluster import LocalCluster


async def one_run(driver: str) -> tuple[float, int]:
    with LocalCluster(replicas=2) as cluster:
        cluster.execute(cluster.primary, "CREATE TABLE t (id serial PRIMARY KEY)")
        async with PoolManager(cluster.dsn, driver=driver) as pm:
            await pm.ready(masters_count=1, replicas_count=2)
            successes: list[float] = []
            failures = 0
            stop = False
            promoted = float("inf")
            resumed = asyncio.Event()

            async def writer() -> None:
                nonlocal failures
                while not stop:
                    try:
                        async with pm.acquire_master(timeout=1.0) as conn:
                            if driver.startswith("psycopg"):
                                await conn.execute("INSERT INTO t DEFAULT VALUES")
                                await conn.commit()
                            else:
                                await conn.execute("INSERT INTO t DEFAULT VALUES")
                        successes.append(time.monotonic())
                        if successes[-1] > promoted:
                            resumed.set()
                    except Exception:
                        failures += 1
                    await asyncio.sleep(0.01)

            task = asyncio.ensure_future(writer())
            await asyncio.sleep(0.3)
            old, new, other = cluster.nodes
            await asyncio.to_thread(cluster.kill, old)
            await asyncio.sleep(0.5)
            await asyncio.to_thread(cluster.promote, new)
            promoted = time.monotonic()
            await asyncio.to_thread(cluster.repoint, other, new)
            await asyncio.wait_for(resumed.wait(), 30)
            stop = True
            await task
            first = min(t for t in successes if t > promoted)
            return first - promoted, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--driver", default="asyncpg")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = [asyncio.run(one_run(args.driver)) for _ in range(args.runs)]
    for i, (seconds, failures) in enumerate(results, 1):
        print(f"run {i}: first write {seconds * 1000:.0f} ms after promotion, {failures} failed")
    median = statistics.median(s for s, _ in results)
    print(f"{args.driver}: median {median * 1000:.0f} ms from promotion to first successful write")


if __name__ == "__main__":
    main()
