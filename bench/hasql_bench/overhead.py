"""Scenario 1: what each client costs per acquire + ``SELECT 1`` + release, on a real cluster.

All three clients of one driver are open at once on the same cluster (so every cell sees the same
server and the same background monitors). In each round, every (tasks, role) cell is measured for
each client back to back, the client order rotating from round to round; a cell is a fixed time
during which ``tasks`` tasks loop over ``async with acquire() as conn: SELECT 1``. Reported: the
median operations per second over the rounds and the median over rounds of the ratio to the raw
pool measured in the same round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from .clients import Client, CoreClient, HasqlClient, RawClient, Sql, Target, sql_for
from .common import RAW, RunConfig, median, rotate

ROLES = ("master", "replica")


async def throughput(
    acquire: Callable[[], AbstractAsyncContextManager[Any]], sql: Sql, tasks: int, seconds: float
) -> tuple[int, float, float]:
    """``tasks`` tasks doing acquire + ``SELECT 1`` + release for ``seconds``.

    Returns the operations done, the wall time they took and the process CPU time spent (the
    event loop runs everything in this thread: client, driver and any background monitor).
    """
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        count = 0
        while loop.time() < stop:
            async with acquire() as conn:
                await sql.select_one(conn)
            count += 1
        done += count

    cpu, started = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return done, time.perf_counter() - started, time.process_time() - cpu


def _acquirer(client: Client, role: str) -> Callable[[], AbstractAsyncContextManager[Any]]:
    return client.master if role == "master" else client.replica


async def measure_driver(driver: str, target: Target, config: RunConfig) -> dict[str, Any]:
    """Every cell of scenario 1 for one driver; returns rows and the clients' settings.

    A round of a cell is ``overhead_slices`` slices per client, the clients alternating slice by
    slice (order rotating), so the three clients of a round see the same load from the rest of the
    machine within a fraction of a second. A round's rate is the client's operations over its time
    in that round; its ratio is that rate over the raw pool's. The process CPU time per operation
    is kept too: less sensitive than throughput to what else the machine runs, and its excess over
    the raw pool's is the client's own cost per operation.
    """
    sql = sql_for(driver)
    clients: list[Client] = [RawClient(driver), HasqlClient(driver), CoreClient(driver)]
    for client in clients:
        await client.open(target)
    try:
        for client in clients:  # warm-up: statement caches, every pooled connection used once
            for role in ROLES:
                await throughput(_acquirer(client, role), sql, 100, config.overhead_warmup)
        samples: dict[tuple[int, str, str], list[float]] = {}
        cpu_samples: dict[tuple[int, str, str], list[float]] = {}
        for tasks in config.overhead_tasks:
            seconds = config.overhead_slice if tasks == 1 else config.overhead_slice_many
            for role in ROLES:
                for round_no in range(config.overhead_rounds):
                    done = dict.fromkeys((c.label for c in clients), 0)
                    walls = dict.fromkeys((c.label for c in clients), 0.0)
                    cpus = dict.fromkeys((c.label for c in clients), 0.0)
                    for slice_no in range(config.overhead_slices):
                        for client in rotate(clients, round_no + slice_no):
                            ops, wall, cpu = await throughput(
                                _acquirer(client, role), sql, tasks, seconds
                            )
                            done[client.label] += ops
                            walls[client.label] += wall
                            cpus[client.label] += cpu
                    for label, ops in done.items():
                        key = (tasks, role, label)
                        samples.setdefault(key, []).append(ops / walls[label])
                        cpu_samples.setdefault(key, []).append(cpus[label] / max(ops, 1) * 1e6)
    finally:
        for client in clients:
            try:
                await asyncio.wait_for(client.close(), 10)
            except Exception:
                await client.terminate()
    rows = []
    for tasks in config.overhead_tasks:
        for role in ROLES:
            raw = samples[(tasks, role, RAW)]
            for client in clients:
                values = samples[(tasks, role, client.label)]
                ratios = [v / r for v, r in zip(values, raw, strict=True)]
                cpu_per_op = cpu_samples[(tasks, role, client.label)]
                cpu_added = [
                    c - r for c, r in zip(cpu_per_op, cpu_samples[(tasks, role, RAW)], strict=True)
                ]
                rows.append(
                    {
                        "driver": driver,
                        "tasks": tasks,
                        "role": role,
                        "client": client.label,
                        "ops_per_s": median(values),
                        "ratio_to_raw": median(ratios),
                        "cpu_us_per_op": median(cpu_per_op),
                        "cpu_us_added_per_op": median(cpu_added),
                        "samples": values,
                        "ratios": ratios,
                        "cpu_samples": cpu_per_op,
                    }
                )
    return {
        "rows": rows,
        "settings": {client.label: client.settings() for client in clients},
    }
