"""The driver's own line for acquires that wait while every connection is handed out.

The line replaces psycopg_pool's wait (a task, a condition and a timer per waiting request), so it
has to keep psycopg_pool's promises: first come first served, a cancelled waiter never holds up the
others or loses a connection, a close or terminate ends every wait, ``max_waiting`` is honoured,
and a discarded connection's replacement reaches the next waiter.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg_pool
import pytest
from hasql_psycopg3.driver import AsyncConn, AsyncPool, PsycopgDriver
from psycopg3_helpers import eventually, node_dsn, shut

from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)

#: Bound on every wait below: a waiter that should get a connection gets it within this.
WAIT = 10.0


async def _waiting(pool_state_waiters: Any, count: int) -> None:
    """Return once ``count`` acquires wait in the driver's line."""

    async def enough() -> bool:
        return len(pool_state_waiters) >= count

    await eventually(enough, f"{count} acquire(s) waiting in the driver's line", WAIT)


async def _open(driver: PsycopgDriver, cluster: LocalCluster, **options: Any) -> AsyncPool:
    pool = driver.create_pool(node_dsn(cluster.primary), {"min_size": 1, **options})
    await asyncio.wait_for(driver.open_pool(pool), WAIT)
    return pool


def _line(driver: PsycopgDriver, pool: AsyncPool) -> Any:
    state = driver._state(pool)
    assert state is not None
    return state.waiters


async def _held_and_waiting(
    driver: PsycopgDriver, pool: AsyncPool, count: int, first_kwargs: dict[str, Any] | None = None
) -> tuple[AsyncConn, list[asyncio.Task[AsyncConn]]]:
    """Take the pool's only connection, then start ``count`` acquires, each in line before the
    next starts (the first with ``first_kwargs`` for ``getconn``)."""
    held = await driver.acquire(pool, 5.0)
    waiters = []
    for number in range(count):
        kwargs = (first_kwargs or {}) if number == 0 else {}
        waiters.append(asyncio.create_task(driver.acquire(pool, 5.0, **kwargs)))
        await _waiting(_line(driver, pool), number + 1)
    return held, waiters


async def test_waiting_acquires_are_served_in_arrival_order(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    try:
        held = await driver.acquire(pool, 5.0)
        served: list[int] = []

        async def client(number: int) -> None:
            conn = await driver.acquire(pool, 5.0)
            served.append(number)
            await driver.release(pool, conn)

        clients = []
        for number in range(4):
            clients.append(asyncio.create_task(client(number)))
            await _waiting(_line(driver, pool), number + 1)
        await driver.release(pool, held)
        await asyncio.wait_for(asyncio.gather(*clients), WAIT)
        assert served == [0, 1, 2, 3]
        assert driver.pool_stats(pool).in_use == 0
    finally:
        await shut(driver, pool)


async def test_a_cancelled_waiter_leaves_the_line_and_loses_nothing(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    try:
        held, (first, second) = await _held_and_waiting(driver, pool, 2)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert len(_line(driver, pool)) == 1
        await driver.release(pool, held)
        conn = await asyncio.wait_for(second, WAIT)
        await driver.release(pool, conn)
        stats = driver.pool_stats(pool)
        assert (stats.idle, stats.in_use) == (1, 0)
    finally:
        await shut(driver, pool)


async def test_a_waiter_cancelled_after_its_turn_came_passes_the_turn_on(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    try:
        held, (first, second) = await _held_and_waiting(driver, pool, 2)
        # The release wakes ``first``; it is cancelled before it gets to run.
        await driver.release(pool, held)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        conn = await asyncio.wait_for(second, WAIT)
        assert driver.pool_stats(pool).in_use == 1
        await driver.release(pool, conn)
        again = await asyncio.wait_for(driver.acquire(pool, 5.0), WAIT)  # nothing was lost
        await driver.release(pool, again)
    finally:
        await shut(driver, pool)


@pytest.mark.parametrize("ending", ["close", "terminate"])
async def test_closing_the_pool_ends_every_wait_with_pool_closed(
    cluster: LocalCluster, driver: PsycopgDriver, ending: str
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    held, waiters = await _held_and_waiting(driver, pool, 3)
    if ending == "close":
        closing = asyncio.create_task(driver.close_pool(pool))
        for waiter in waiters:
            with pytest.raises(psycopg_pool.PoolClosed):
                await asyncio.wait_for(waiter, WAIT)
        await driver.release(pool, held)
        await asyncio.wait_for(closing, WAIT)
    else:
        await asyncio.wait_for(driver.terminate_pool(pool), WAIT)
        for waiter in waiters:
            with pytest.raises(psycopg_pool.PoolClosed):
                await asyncio.wait_for(waiter, WAIT)
    assert pool.closed


async def test_max_waiting_is_honoured(cluster: LocalCluster, driver: PsycopgDriver) -> None:
    pool = await _open(driver, cluster, max_size=1, max_waiting=2)
    try:
        held, waiters = await _held_and_waiting(driver, pool, 2)
        with pytest.raises(psycopg_pool.TooManyRequests, match="2 requests waiting"):
            await driver.acquire(pool, 5.0)
        await driver.release(pool, held)
        for waiter in waiters:
            await driver.release(pool, await asyncio.wait_for(waiter, WAIT))
    finally:
        await shut(driver, pool)


async def test_a_discarded_connection_s_replacement_reaches_the_next_waiter(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    try:
        held, (waiter,) = await _held_and_waiting(driver, pool, 1)
        old_pid = held.info.backend_pid
        driver.discard(pool, held)
        conn = await asyncio.wait_for(waiter, WAIT)
        try:
            assert conn.info.backend_pid != old_pid
            cursor = await conn.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
        finally:
            await driver.release(pool, conn)
    finally:
        await shut(driver, pool)


async def test_a_waiter_whose_turn_came_but_failed_passes_the_turn_on(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = await _open(driver, cluster, max_size=1)
    try:
        # getconn() refuses the unknown argument once the first waiter's turn comes.
        held, (failing, second) = await _held_and_waiting(
            driver, pool, 2, first_kwargs={"no_such_argument": 1}
        )
        await driver.release(pool, held)
        with pytest.raises(TypeError, match="no_such_argument"):
            await asyncio.wait_for(failing, WAIT)
        conn = await asyncio.wait_for(second, WAIT)
        await driver.release(pool, conn)
    finally:
        await shut(driver, pool)
