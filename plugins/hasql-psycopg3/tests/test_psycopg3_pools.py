"""psycopg specifics of the driver's pools: reserved and psycopg_pool options, the user's connection
settings, psycopg_pool's timeout, and dead idle connections.

What every driver's pools must do (sizes and statistics, close, terminate, expire_idle,
cancellation, failed opens) is proven by hasql-core's driver suite
(test_psycopg3_driver_suite.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
import psycopg_pool
import pytest
from hasql_psycopg3.driver import PsycopgDriver, PsycopgPoolTimeout
from psycopg3_helpers import backends, eventually, node_dsn, shut

from hasql_core.driver import ErrorKind
from hasql_core.errors import ConfigurationError
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("option", ["conninfo", "open"])
def test_reserved_pool_options_are_refused(
    cluster: LocalCluster, driver: PsycopgDriver, option: str
) -> None:
    options = {option: "x", "min_size": 1}
    with pytest.raises(ConfigurationError, match=option):
        driver.create_pool(node_dsn(cluster.primary), options)
    assert options == {option: "x", "min_size": 1}


async def test_handed_out_connections_keep_the_user_settings(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    configured: list[int] = []

    async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
        async with conn.transaction():
            await conn.execute("SET statement_timeout = '4321ms'")
        configured.append(conn.info.backend_pid)

    plain = driver.create_pool(node_dsn(cluster.primary), {"min_size": 1, "configure": configure})
    auto = driver.create_pool(
        node_dsn(cluster.primary), {"min_size": 1, "kwargs": {"autocommit": True}}
    )
    try:
        await driver.open_pool(plain)
        await driver.open_pool(auto)

        conn = await driver.acquire(plain, 5.0)
        try:
            assert conn.autocommit is False
            assert conn.info.backend_pid in configured
            cur = await conn.execute("SHOW statement_timeout")
            assert await cur.fetchone() == ("4321ms",)
            # Not autocommit: the query opened a transaction that release() must roll back.
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        finally:
            await driver.release(plain, conn)

        conn = await driver.acquire(auto, 5.0)
        try:
            assert conn.autocommit is True
            await conn.execute("SELECT 1")
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        finally:
            await driver.release(auto, conn)
    finally:
        await shut(driver, plain)
        await shut(driver, auto)


async def test_pool_timeout_is_an_asyncio_timeout_with_the_pool_timeout_as_cause(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = driver.create_pool(node_dsn(cluster.primary), {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        # Taken behind the driver's back, so the acquire below waits in psycopg_pool (where the
        # timeout applies) rather than in the driver's own line (where the core's deadline does).
        conn = await pool.getconn()
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError) as info:
            await driver.acquire(pool, 0.2)
        assert time.monotonic() - started < 2.0
        assert isinstance(info.value, PsycopgPoolTimeout)
        assert isinstance(info.value.__cause__, psycopg_pool.PoolTimeout)
        assert driver.classify_error(info.value) is ErrorKind.OTHER
        assert driver.pool_stats(pool).in_use == 0
        await pool.putconn(conn)
        again = await driver.acquire(pool, 1.0)
        await driver.release(pool, again)
    finally:
        await shut(driver, pool)


async def test_all_idle_connections_closed_by_the_server_fail_the_acquire_at_once(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    """When every idle connection was closed by the server (the host looks gone), acquire raises
    ``OperationalError`` (CONNECTION_LOST) at once instead of waiting for psycopg_pool to open a
    new connection, so the core re-probes the host; the pool heals by itself afterwards. (That
    one dead idle connection is never handed out is proven by the driver suite.)"""
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 2, "max_size": 2}
    )
    try:
        await driver.open_pool(pool)

        async def refilled() -> bool:
            return len(await backends(cluster, cluster.primary, app_name)) == 2

        await eventually(lambda: _idle(driver, pool, 2), "both connections to be idle")
        await _terminate_backends(
            cluster, await backends(cluster, cluster.primary, app_name), app_name
        )
        with pytest.raises(psycopg.OperationalError) as info:
            await driver.acquire(pool, 5.0)
        assert driver.classify_error(info.value) is ErrorKind.CONNECTION_LOST
        assert driver.pool_stats(pool).in_use == 0
        await eventually(refilled, "the pool to reconnect")
        conn = await driver.acquire(pool, 5.0)
        await conn.execute("SELECT 1")
        await driver.release(pool, conn)
    finally:
        await shut(driver, pool)


async def _idle(driver: PsycopgDriver, pool: Any, count: int) -> bool:
    return driver.pool_stats(pool).idle == count


async def _terminate_backends(cluster: LocalCluster, pids: list[int], app_name: str) -> None:
    await asyncio.to_thread(
        cluster.execute,
        cluster.primary,
        f"SELECT pg_terminate_backend(pid) FROM unnest(ARRAY{pids}::int[]) AS pid",
    )

    async def gone() -> bool:
        return not set(pids) & set(await backends(cluster, cluster.primary, app_name))

    await eventually(gone, f"backends {pids} to exit")
