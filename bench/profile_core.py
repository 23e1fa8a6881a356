"""Profile hasql-core where a benchmark target is missed (pyinstrument, text output).

    python bench/profile_core.py monitor-fake [--hosts 1000] [--seconds 4]
    python bench/profile_core.py monitor-real [--driver asyncpg] [--seconds 10]
    python bench/profile_core.py acquire-fake [--tasks 100] [--role replica] [--ops 50000]
    python bench/profile_core.py acquire-real [--driver asyncpg] [--tasks 100] [--role master]

``monitor-*`` profiles an idle ``PoolManager`` (only its monitor runs); ``acquire-*`` profiles
acquire (+ ``SELECT 1`` on a real cluster) + release loops. The event loop runs in the main thread,
so pyinstrument's sampling of that thread sees every callback. The text profile is printed and
saved to ``bench-results/profile-<name>.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hasql_bench.clients import POOL_OPTIONS, pool_options, sql_for
from pyinstrument import Profiler

from hasql_core import PoolManager
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver


async def _profiled(body: Callable[[], Awaitable[Any]], interval: float) -> tuple[str, float]:
    profiler = Profiler(interval=interval, async_mode="disabled")
    cpu = time.process_time()
    profiler.start()
    await body()
    profiler.stop()
    return profiler.output_text(unicode=True, color=False), time.process_time() - cpu


async def monitor_fake(args: argparse.Namespace) -> str:
    """An idle manager over ``--hosts`` simulated hosts."""
    cluster = FakeCluster(args.hosts)
    pm = PoolManager(
        cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs={"min_size": 1, "max_size": 1}
    )
    await pm.ready(masters_count=1, replicas_count=args.hosts - 1, timeout=120)
    await asyncio.sleep(1.1)
    text, cpu = await _profiled(lambda: asyncio.sleep(args.seconds), 0.0005)
    await pm.close()
    return f"{args.hosts} hosts, {cpu / args.seconds:.3f} CPU s per s\n{text}"


async def monitor_real(args: argparse.Namespace) -> str:
    """An idle manager over a local 3-node cluster."""
    with LocalCluster(replicas=2) as cluster:
        pm = PoolManager(
            cluster.dsn, driver=args.driver, pool_factory_kwargs=pool_options(args.driver)
        )
        await pm.ready(masters_count=1, replicas_count=2)
        await asyncio.sleep(1.1)
        text, cpu = await _profiled(lambda: asyncio.sleep(args.seconds), 0.0001)
        await pm.close()
    return f"3 hosts, {cpu / args.seconds * 1e6 / 3:.0f} µs CPU per host per s\n{text}"


async def _loop(
    acquire: Callable[[], Any], body: Callable[[Any], Awaitable[None]], args: Any
) -> None:
    per_task = args.ops // args.tasks

    async def worker() -> None:
        for _ in range(per_task):
            async with acquire() as conn:
                await body(conn)

    await asyncio.gather(*(worker() for _ in range(args.tasks)))


async def acquire_fake(args: argparse.Namespace) -> str:
    """acquire + release over the fake driver."""
    cluster = FakeCluster(3)
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), pool_factory_kwargs=POOL_OPTIONS)
    await pm.ready(masters_count=1, replicas_count=2)
    acquire = pm.acquire_replica if args.role == "replica" else pm.acquire_master

    async def nothing(conn: Any) -> None:
        return None

    text, cpu = await _profiled(lambda: _loop(acquire, nothing, args), 0.0001)
    await pm.close()
    return f"{args.ops} ops, {cpu / args.ops * 1e6:.1f} µs CPU per op\n{text}"


async def acquire_real(args: argparse.Namespace) -> str:
    """acquire + ``SELECT 1`` + release on a local cluster."""
    sql = sql_for(args.driver)
    with LocalCluster(replicas=2) as cluster:
        # The profiler slows everything down: a long acquire_timeout keeps the waits in asyncpg's
        # pool queue (p99 of a few hundred ms at 100 tasks here, raw pool included) from tripping.
        pm = PoolManager(
            cluster.dsn,
            driver=args.driver,
            pool_factory_kwargs=pool_options(args.driver),
            acquire_timeout=30,
        )
        await pm.ready(masters_count=1, replicas_count=2)
        acquire = pm.acquire_replica if args.role == "replica" else pm.acquire_master
        started = time.perf_counter()
        text, cpu = await _profiled(lambda: _loop(acquire, sql.select_one, args), 0.001)
        wall = time.perf_counter() - started
        await pm.close()
    return f"{args.ops} ops, {args.ops / wall:,.0f} ops/s, {cpu / args.ops * 1e6:.1f} µs CPU/op\n{text}"


COMMANDS = {
    "monitor-fake": monitor_fake,
    "monitor-real": monitor_real,
    "acquire-fake": acquire_fake,
    "acquire-real": acquire_real,
}


def main() -> None:
    """Parse arguments, run one profile, print and save it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--driver", choices=("asyncpg", "psycopg3"), default="asyncpg")
    parser.add_argument("--tasks", type=int, default=100)
    parser.add_argument("--role", choices=("master", "replica"), default="replica")
    parser.add_argument("--ops", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=Path("bench-results"))
    args = parser.parse_args()
    text = asyncio.run(COMMANDS[args.command](args))
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"profile-{args.command}"
    if args.command.endswith("real"):
        name += f"-{args.driver}"
    if args.command.startswith("acquire"):
        name += f"-{args.role}-{args.tasks}"
    path = args.out / f"{name}.txt"
    path.write_text(text)
    print(text)
    print(f"Written: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
