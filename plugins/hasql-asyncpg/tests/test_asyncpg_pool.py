"""asyncpg specifics of the driver's pools: asyncpg's options (``server_settings``, the statement
cache), its reset on release, its proxies, opening and terminating races, DSN translation.

What every driver's pools must do (sizes, close, terminate, expire_idle, cancellation, failed
opens) is proven by hasql-core's driver suite (test_asyncpg_driver_suite.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import backends, eventually, node_dsn

from hasql_core.driver import Driver
from hasql_core.dsn import split_dsn

pytestmark = pytest.mark.timeout(120)

Drv = Driver[Any, Any, Any]


async def test_pool_options_reach_the_connections(
    driver: Drv, shared_cluster: Any, app_name: str
) -> None:
    dsn = node_dsn(
        shared_cluster.primary,
        application_name="from-the-dsn",
        options="-c statement_timeout=4321",
        search_path="from_the_dsn",
    )
    options: dict[str, Any] = {
        "min_size": 1,
        "max_size": 1,
        "statement_cache_size": 0,
        "server_settings": {"application_name": app_name, "work_mem": "7MB"},
    }
    pool = driver.create_pool(dsn, options)
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        try:
            row = await conn.fetchrow(
                "SELECT current_setting('application_name') AS app,"
                " current_setting('work_mem') AS work_mem,"
                " current_setting('statement_timeout') AS statement_timeout,"
                " current_setting('search_path') AS search_path"
            )
            # The user's server_settings win over the DSN's, and both reach the server.
            assert dict(row) == {
                "app": app_name,
                "work_mem": "7MB",
                "statement_timeout": "4321ms",
                "search_path": "from_the_dsn",
            }
            # statement_cache_size=0: asyncpg keeps no named prepared statement on the server.
            for _ in range(3):
                await conn.fetchval("SELECT 1")
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") == 0
        finally:
            await driver.release(pool, conn)
    finally:
        await driver.close_pool(pool)


async def test_default_statement_cache_is_used_without_the_option(
    driver: Drv, shared_cluster: Any
) -> None:
    # The counterpart of the test above: without statement_cache_size=0, statements are cached.
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        try:
            await conn.fetchval("SELECT 1")
            assert await conn.fetchval("SELECT count(*) FROM pg_prepared_statements") >= 1
        finally:
            await driver.release(pool, conn)
    finally:
        await driver.close_pool(pool)


async def test_session_state_is_reset_on_release(
    driver: Drv, shared_cluster: Any, app_name: str
) -> None:
    options = {"min_size": 1, "max_size": 1, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        default = await conn.fetchval("SHOW work_mem")
        await conn.execute("SET work_mem = '13MB'")
        await conn.execute("SET application_name = 'changed'")
        assert await conn.fetchval("SHOW work_mem") == "13MB"
        await driver.release(pool, conn)

        conn = await driver.acquire(pool, None)
        try:
            assert await conn.fetchval("SELECT pg_backend_pid()") == pid  # the same session
            assert await conn.fetchval("SHOW work_mem") == default
            assert await conn.fetchval("SHOW application_name") == app_name
        finally:
            await driver.release(pool, conn)
    finally:
        await driver.close_pool(pool)


async def test_released_connection_reads_as_closed(driver: Drv, shared_cluster: Any) -> None:
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        assert driver.is_connection_closed(conn) is False
        await driver.release(pool, conn)
        assert driver.is_connection_closed(conn) is True
        await driver.release(pool, conn)  # a second release does nothing
        assert driver.pool_stats(pool).in_use == 0
    finally:
        await driver.close_pool(pool)


async def test_terminate_before_open_means_it_never_opens(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 1, "max_size": 1, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    await driver.terminate_pool(pool)
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        await driver.open_pool(pool)
    assert await backends(admin, app_name) == []


async def test_terminate_while_opening_leaves_no_connection(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 3, "max_size": 3, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    opening = asyncio.create_task(driver.open_pool(pool))
    await asyncio.sleep(0)  # the open has started connecting
    await driver.terminate_pool(pool)
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        await opening
    assert driver.pool_stats(pool).size == 0
    await eventually(lambda: backends(admin, app_name), lambda pids: pids == [])


async def test_sslmode_from_the_dsn_reaches_asyncpg(driver: Drv, shared_cluster: Any) -> None:
    node = shared_cluster.primary  # the local cluster has no SSL
    plain = await driver.connect_monitor(node_dsn(node, sslmode="disable"), 5)
    try:
        assert (
            await plain.fetchval("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            is False
        )
    finally:
        await driver.close_monitor(plain)
    with pytest.raises(ConnectionError, match="SSL"):
        await driver.connect_monitor(node_dsn(node, sslmode="require"), 5)


async def test_hostaddr_is_where_the_connection_goes(driver: Drv, shared_cluster: Any) -> None:
    node = shared_cluster.primary
    dsn = node_dsn(node)
    (by_address,) = split_dsn(
        f"host=no-such-host.invalid hostaddr=127.0.0.1 port={node.port} user={dsn.user} "
        f"password={dsn.password} dbname={dsn.database}"
    )
    pool = driver.create_pool(by_address, {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        try:
            assert await conn.fetchval("SELECT inet_server_port()") == node.port
        finally:
            await driver.release(pool, conn)
    finally:
        await driver.close_pool(pool)
