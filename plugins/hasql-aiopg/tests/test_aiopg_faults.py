"""Frozen hosts (SIGSTOP), aiopg's side: a discard hands the slot to the acquire queued for it, and
terminate/expire do not wait for aiopg's pool lock held by an acquire connecting to the frozen
host. (The contract's frozen-host scenarios are in hasql-core's driver suite.)"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg2
import pytest
from aiopg_helpers import eventually, fetchval, raw_of

from hasql_core.driver import Driver
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(90)

Drv = Driver[Any, Any, Any]


@pytest.mark.hasql_cluster(replicas=0)
async def test_discard_on_a_frozen_host_is_immediate_and_frees_the_slot(
    driver: Drv, hasql_cluster: LocalCluster, make_pool: Any
) -> None:
    node = hasql_cluster.primary
    pool = await make_pool(node, minsize=1, maxsize=1, timeout=30)
    connection = await driver.acquire(pool, None)
    waiter = asyncio.ensure_future(driver.acquire(pool, None))  # queued for the only slot
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        running = asyncio.ensure_future(fetchval(connection, "SELECT 1"))
        done, _ = await asyncio.wait({running}, timeout=0.2)
        assert not done  # the server does not answer
        started = time.monotonic()
        driver.discard(pool, connection)
        assert time.monotonic() - started < 0.05
        with pytest.raises(psycopg2.OperationalError):
            await asyncio.wait_for(running, 1)  # the statement fails at once
        assert driver.is_connection_closed(connection)
        assert driver.pool_stats(pool).in_use == 0
        # The slot went to the waiter, which is now connecting (the host is still frozen).
        await eventually(
            _async(lambda: driver.pool_stats(pool).size == 1), "the waiter connecting", 5
        )
        assert not waiter.done()
    finally:
        await asyncio.to_thread(hasql_cluster.thaw, node)
    replacement = await asyncio.wait_for(waiter, 10)
    assert raw_of(replacement) is not raw_of(connection)
    assert await fetchval(replacement, "SELECT 1") == 1
    await driver.release(pool, replacement)
    driver.discard(pool, connection)  # discarded already: nothing happens
    assert driver.free_size(pool) == 1


@pytest.mark.hasql_cluster(replicas=0)
async def test_terminate_and_expire_on_a_frozen_host_are_immediate(
    driver: Drv, hasql_cluster: LocalCluster, make_pool: Any
) -> None:
    """Also while an acquire holds aiopg's pool lock, connecting to the frozen host."""
    node = hasql_cluster.primary
    pool = await make_pool(node, minsize=1, maxsize=3, timeout=30)
    held = [await driver.acquire(pool, None) for _ in range(2)]  # the second one connects
    await driver.release(pool, held.pop())
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        taken = await asyncio.wait_for(driver.acquire(pool, None), 1)  # the idle one
        connecting = asyncio.ensure_future(driver.acquire(pool, None))
        done, _ = await asyncio.wait({connecting}, timeout=0.2)
        assert not done  # connecting to the frozen host, under aiopg's pool lock
        started = time.monotonic()
        await asyncio.wait_for(driver.expire_idle(pool), 0.5)
        await asyncio.wait_for(driver.terminate_pool(pool), 0.5)
        assert time.monotonic() - started < 0.5
        assert driver.is_connection_closed(taken) and driver.is_connection_closed(held[0])
        assert driver.pool_stats(pool).idle == 0
    finally:
        await asyncio.to_thread(hasql_cluster.thaw, node)
    with pytest.raises(RuntimeError, match="terminated"):
        await asyncio.wait_for(connecting, 35)  # its connect ends once the host is back


def _async(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check
