"""Python bytecodes per operation: a deterministic measure of what a client adds to the raw pool.

Throughput on a small shared machine swings by several per cent from one second to the next; the
number of Python bytecodes the event loop's thread runs per acquire + ``SELECT 1`` + release does
not. Each one costs tens of nanoseconds on a real driver (more than in a micro-benchmark: the
caches are cold after the driver's own work), so the excess over the raw pool is the client's own
Python cost, and where it is spent (per function) shows what to remove.

    python bench/hasql_bench/bytecodes.py --driver psycopg3 --tasks 1 --role master

opens a local cluster, runs ``--ops`` operations per client under ``sys.settrace`` with opcode
events, and prints the bytecodes per operation of the raw pool and hasql-core and the functions
where hasql-core's excess goes. C code (the drivers' protocol parsers, the event loop's C parts)
is not counted: only Python.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import FrameType
from typing import Any

from .clients import Client, CoreClient, RawClient, Sql, Target, sql_for

__all__ = ["OpcodeCounter", "count_per_op", "main"]


class OpcodeCounter:
    """Counts the Python bytecodes run while active, per code object (``file:function``)."""

    def __init__(self) -> None:
        self.by_code: collections.Counter[str] = collections.Counter()

    def _trace(self, frame: FrameType, event: str, arg: Any) -> Callable[..., Any]:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            self.by_code[f"{code.co_filename.rsplit('/', 2)[-1]}:{code.co_qualname}"] += 1
        return self._trace

    def start(self) -> None:
        """Count from now (new frames, and frames resumed from now on, are traced)."""
        sys.settrace(self._trace)

    def stop(self) -> None:
        """Stop counting."""
        sys.settrace(None)

    @property
    def total(self) -> int:
        """Bytecodes counted so far."""
        return sum(self.by_code.values())


async def _run(
    acquire: Callable[[], AbstractAsyncContextManager[Any]], sql: Sql, tasks: int, ops: int
) -> None:
    remaining = ops

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with acquire() as conn:
                await sql.select_one(conn)

    await asyncio.gather(*(worker() for _ in range(tasks)))


async def count_per_op(
    client: Client, sql: Sql, tasks: int, role: str, ops: int
) -> tuple[float, collections.Counter[str]]:
    """Bytecodes per operation of ``client`` (opened) and the count per code object, per op."""
    acquire = client.master if role == "master" else client.replica
    await _run(acquire, sql, tasks, max(ops // 4, tasks * 2))  # warm-up: caches, every connection
    counter = OpcodeCounter()
    counter.start()
    try:
        await _run(acquire, sql, tasks, ops)
    finally:
        counter.stop()
    return counter.total / ops, counter.by_code


async def compare(driver: str, tasks: int, role: str, ops: int, top: int) -> str:
    """Open a local cluster, count raw and hasql-core, and describe the difference."""
    from hasql_core.testing.cluster import LocalCluster

    sql = sql_for(driver)
    lines = []
    with LocalCluster(replicas=2) as cluster:
        target = Target.of(cluster)
        # Tracing slows everything down tenfold: at 100 tasks the default 1 s acquire timeout
        # would pass while waiting for the pool. A longer one changes nothing else.
        clients: list[Client] = [RawClient(driver), CoreClient(driver, acquire_timeout=60.0)]
        per_code: list[collections.Counter[str]] = []
        per_op: list[float] = []
        for client in clients:
            await client.open(target)
        try:
            for client in clients:
                value, by_code = await count_per_op(client, sql, tasks, role, ops)
                per_op.append(value)
                per_code.append(by_code)
        finally:
            for client in clients:
                await client.close()
    raw, core = per_op
    lines.append(
        f"{driver}, {tasks} task(s), {role}: raw {raw:.0f} bytecodes/op, hasql-core {core:.0f} "
        f"(+{core - raw:.0f})"
    )
    difference = per_code[1].copy()
    difference.subtract(per_code[0])
    lines.append("largest differences per op (hasql-core - raw), by function:")
    for name, count in sorted(difference.items(), key=lambda item: -abs(item[1]))[:top]:
        lines.append(f"  {count / ops:+8.1f}  {name}")
    return "\n".join(lines)


def main() -> None:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=("asyncpg", "psycopg3"), default="asyncpg")
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--role", choices=("master", "replica"), default="master")
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    print(asyncio.run(compare(args.driver, args.tasks, args.role, args.ops, args.top)))


if __name__ == "__main__":
    main()
