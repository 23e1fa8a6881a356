"""How the driver gives connections back when hasql-core starts the release from an event-loop
callback, with no task (``release_task_free``): an idle connection goes back at once; a connection
left in a transaction, or a pool with a ``reset`` callback, has its ``putconn`` run in a task.

Each test releases through a PoolManager, as an application does, and checks that the connection
comes back to the pool (the same server backend serves the next acquire), that user code ran
inside a task, and that hasql-core logged no failure.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
import pytest
from psycopg3_helpers import DRIVER_NAME

from hasql_core import PoolManager

pytestmark = pytest.mark.timeout(120)


async def _backends_over_two_blocks(
    pm: PoolManager, use: Callable[[Any], Awaitable[None]]
) -> tuple[int, int]:
    """The server pid of the pool's one connection in two ``async with`` blocks in a row, the
    first of which runs ``use``; waits until the connection is back after each block."""
    await pm.ready(timeout=30)
    pids = []
    for block in range(2):
        async with pm.acquire_master() as conn:
            pids.append(conn.info.backend_pid)
            if block == 0:
                await use(conn)
            else:
                cursor = await conn.execute("SELECT 1")
                assert await cursor.fetchone() == (1,)

        async def back() -> bool:
            return all(pm.driver.pool_stats(pool).in_use == 0 for pool in pm.pools)

        for _ in range(500):
            if await back():
                break
            await asyncio.sleep(0.01)
        assert await back(), "the connection never came back to its pool"
    return pids[0], pids[1]


def _failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("hasql_core") and record.levelno >= logging.WARNING
    ]


#: For each rollback by the connection class below: whether it ran inside a task.
_ROLLBACKS_IN_TASK: list[bool] = []


class _TaskCheckingConnection(psycopg.AsyncConnection[Any]):
    """A connection class whose ``rollback`` notes whether it ran in a task."""

    async def rollback(self) -> None:
        _ROLLBACKS_IN_TASK.append(asyncio.current_task() is not None)
        await super().rollback()


async def test_a_connection_left_in_a_transaction_is_rolled_back_in_a_task_and_kept(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    async def leave_a_transaction_open(conn: Any) -> None:
        await conn.execute("SET LOCAL application_name = 'inside_the_transaction'")

    _ROLLBACKS_IN_TASK.clear()
    caplog.set_level(logging.WARNING)
    # Not autocommit: the SET opens a transaction, which putconn rolls back.
    options = {"min_size": 1, "max_size": 1, "connection_class": _TaskCheckingConnection}
    pm = PoolManager(cluster.primary.dsn, driver=DRIVER_NAME, pool_factory_kwargs=options)
    try:
        before, after = await _backends_over_two_blocks(pm, leave_a_transaction_open)
        async with pm.acquire_master() as conn:
            cursor = await conn.execute("SHOW application_name")
            row = await cursor.fetchone()
            await conn.rollback()
    finally:
        await pm.close()
    assert _ROLLBACKS_IN_TASK[:1] == [True]
    assert before == after, "the connection was discarded instead of rolled back"
    assert row != ("inside_the_transaction",)
    assert _failures(caplog) == []


async def test_the_pools_reset_callback_runs_in_a_task(
    cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    in_task: list[bool] = []

    async def reset(conn: Any) -> None:
        await asyncio.sleep(0)
        in_task.append(asyncio.current_task() is not None)

    async def nothing(conn: Any) -> None:
        return None

    caplog.set_level(logging.WARNING)
    options = {"min_size": 1, "max_size": 1, "kwargs": {"autocommit": True}, "reset": reset}
    pm = PoolManager(cluster.primary.dsn, driver=DRIVER_NAME, pool_factory_kwargs=options)
    try:
        before, after = await _backends_over_two_blocks(pm, nothing)
    finally:
        await pm.close()
    assert in_task == [True, True]
    assert before == after
    assert _failures(caplog) == []
