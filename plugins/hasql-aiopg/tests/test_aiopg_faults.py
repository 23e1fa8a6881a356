"""Frozen hosts (SIGSTOP): discarding and releasing never wait on the server, through the driver
and through a PoolManager."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg2
import pytest
from aiopg_helpers import DRIVER_NAME, eventually, fetchval, raw_of

from hasql_core import PoolManager
from hasql_core.driver import Driver
from hasql_core.host_state import Role
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


@pytest.mark.hasql_cluster(replicas=1)
async def test_leaving_a_block_after_a_statement_cut_short_on_a_frozen_primary_is_bounded(
    hasql_cluster: LocalCluster,
) -> None:
    """The application bounds its statement with wait_for while the primary is frozen; leaving the
    ``async with`` block then returns within about refresh_timeout (here at once), and the
    connection's slot is free again."""
    cluster = hasql_cluster
    refresh_timeout = 1.0
    pm = PoolManager(
        cluster.dsn,
        driver=DRIVER_NAME,
        refresh_delay=0.3,
        refresh_timeout=refresh_timeout,
        pool_factory_kwargs={"minsize": 1, "maxsize": 2},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        primary_pool = (await pm.get_master_pools())[0]
        left = 0.0

        async def cut_short() -> None:
            nonlocal left
            async with pm.acquire_master() as connection:
                cursor = await raw_of(connection).cursor()
                await asyncio.to_thread(cluster.freeze, cluster.primary)
                try:
                    await asyncio.wait_for(cursor.execute("SELECT pg_sleep(10)"), 1)
                finally:
                    left = time.monotonic()

        with pytest.raises(asyncio.TimeoutError):
            await cut_short()
        took = time.monotonic() - left
        assert took < refresh_timeout + 0.5, took
        assert pm.driver.pool_stats(primary_pool).in_use == 0
        await eventually(
            _async(lambda: pm.host_states()[0].role is Role.UNAVAILABLE),
            "the frozen primary marked unavailable",
        )
    finally:
        await asyncio.to_thread(cluster.thaw, cluster.primary)
        started = time.monotonic()
        await pm.close(timeout=5)
        assert time.monotonic() - started < 6


def _async(predicate: Any) -> Any:
    async def check() -> bool:
        return bool(predicate())

    return check


@pytest.mark.hasql_cluster(replicas=1)
async def test_a_release_after_a_host_failure_through_the_manager_is_bounded(
    hasql_cluster: LocalCluster,
) -> None:
    """A statement that fails with a lost connection while the primary is frozen: leaving the
    block does not wait on the host either."""
    cluster = hasql_cluster
    pm = PoolManager(
        cluster.dsn,
        driver=DRIVER_NAME,
        refresh_delay=0.3,
        refresh_timeout=1.0,
        pool_factory_kwargs={"minsize": 1, "maxsize": 2},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        connection = await pm.acquire_master()
        await asyncio.to_thread(cluster.freeze, cluster.primary)
        raw_of(connection).close()  # as if the socket broke
        with pytest.raises(psycopg2.InterfaceError) as info:
            await fetchval(connection, "SELECT 1")
        pm.report_error(connection, info.value)
        started = time.monotonic()
        await pm.release(connection)
        assert time.monotonic() - started < 0.1
    finally:
        await asyncio.to_thread(cluster.thaw, cluster.primary)
        await pm.close(timeout=5)
