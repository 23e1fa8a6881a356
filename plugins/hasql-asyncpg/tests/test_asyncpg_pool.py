"""Pools made by the driver, against the real local cluster's primary."""

from __future__ import annotations

import asyncio
import copy
import random
import socket
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import backends, eventually, node_dsn

from hasql_core.driver import Driver, PoolStats
from hasql_core.dsn import split_dsn

pytestmark = pytest.mark.timeout(120)

Drv = Driver[Any, Any, Any]


async def test_pool_has_exactly_min_size_connections_and_options_are_untouched(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options: dict[str, Any] = {
        "min_size": 2,
        "max_size": 4,
        "server_settings": {"application_name": app_name},
    }
    before = copy.deepcopy(options)
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    try:
        assert options == before
        assert await backends(admin, app_name) == []  # create_pool does no I/O
        await driver.open_pool(pool)
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=2, idle=2, in_use=0)
        assert len(await backends(admin, app_name)) == 2

        held = [await driver.acquire(pool, None) for _ in range(3)]
        stats = driver.pool_stats(pool)
        assert stats == PoolStats(min=2, max=4, size=3, idle=0, in_use=3)
        assert stats.free == 1
        assert driver.free_size(pool) == 1  # the cheap path agrees
        assert len(await backends(admin, app_name)) == 3
        pids = {await conn.fetchval("SELECT pg_backend_pid()") for conn in held}
        assert pids == set(await backends(admin, app_name))

        await driver.release(pool, held.pop())
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=3, idle=1, in_use=2)
        for conn in held:
            await driver.release(pool, conn)
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=3, idle=3, in_use=0)
        assert options == before
    finally:
        await driver.close_pool(pool)
    assert driver.pool_stats(pool).size == 0
    await eventually(lambda: backends(admin, app_name), lambda pids: pids == [])


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


async def test_unix_socket_dsn(driver: Drv, shared_cluster: Any) -> None:
    node = shared_cluster.primary
    dsn = node_dsn(node)
    (socket_dsn,) = split_dsn(
        f"host={node.socket_dir} port={node.port} user={dsn.user} dbname={dsn.database}"
    )
    pool = driver.create_pool(socket_dsn, {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        try:
            # inet_server_addr() is NULL over a Unix socket.
            assert await conn.fetchval("SELECT inet_server_addr()") is None
            assert await conn.fetchval("SELECT current_user") == dsn.user
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


async def test_terminate_closes_handed_out_connections(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 1, "max_size": 3, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    await driver.open_pool(pool)
    held = [await driver.acquire(pool, None) for _ in range(2)]
    assert len(await backends(admin, app_name)) == 2
    await driver.terminate_pool(pool)
    assert all(driver.is_connection_closed(conn) for conn in held)
    assert driver.pool_stats(pool).size == 0
    await eventually(lambda: backends(admin, app_name), lambda pids: pids == [])
    with pytest.raises(asyncpg.exceptions.InterfaceError):
        await held[0].fetchval("SELECT 1")


async def test_close_waits_for_handed_out_connections(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 1, "max_size": 2, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    await driver.open_pool(pool)
    conn = await driver.acquire(pool, None)
    closing = asyncio.create_task(driver.close_pool(pool))
    done, _ = await asyncio.wait({closing}, timeout=0.3)
    assert not done, "close_pool returned while a connection was still handed out"
    assert await conn.fetchval("SELECT 42") == 42  # still usable while the pool closes
    await driver.release(pool, conn)
    await asyncio.wait_for(closing, 10)
    await eventually(lambda: backends(admin, app_name), lambda pids: pids == [])


async def test_expire_idle_replaces_idle_connections(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 2, "max_size": 2, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    try:
        await driver.open_pool(pool)
        old = set(await backends(admin, app_name))
        assert len(old) == 2
        await driver.expire_idle(pool)
        held = [await driver.acquire(pool, None) for _ in range(2)]
        new = {await conn.fetchval("SELECT pg_backend_pid()") for conn in held}
        assert len(new) == 2
        assert not new & old, "an expired idle connection was handed out again"
        # The expired sessions end on the server.
        await eventually(lambda: backends(admin, app_name), lambda pids: set(pids) == new)
        for conn in held:
            await driver.release(pool, conn)
        assert driver.pool_stats(pool) == PoolStats(min=2, max=2, size=2, idle=2, in_use=0)
    finally:
        await driver.close_pool(pool)


async def test_cancelled_acquires_leak_nothing(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    # min_size=0 so that acquires also open connections: cancellation hits the connect too.
    max_size = 3
    options = {
        "min_size": 0,
        "max_size": max_size,
        "max_inactive_connection_lifetime": 0.05,
        "server_settings": {"application_name": app_name},
    }
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    rng = random.Random(20261128)
    kept: list[Any] = []
    try:
        await driver.open_pool(pool)
        for _ in range(150):
            # Hold some connections sometimes, so acquires also wait on an empty pool.
            if kept and rng.random() < 0.5:
                await driver.release(pool, kept.pop())
            task = asyncio.create_task(driver.acquire(pool, None))
            await asyncio.sleep(rng.choice([0, 0, 0.0002, 0.001, 0.003]))
            task.cancel()
            try:
                conn = await task
            except asyncio.CancelledError:
                continue
            if len(kept) < max_size - 1 and rng.random() < 0.5:
                kept.append(conn)
            else:
                await driver.release(pool, conn)
        for conn in kept:
            await driver.release(pool, conn)
        kept.clear()

        stats = driver.pool_stats(pool)
        assert stats.in_use == 0, stats
        # Every slot can still be taken: nothing is stuck checked out.
        held = [await asyncio.wait_for(driver.acquire(pool, None), 10) for _ in range(max_size)]
        assert driver.pool_stats(pool).in_use == max_size
        pids = {await conn.fetchval("SELECT pg_backend_pid()") for conn in held}
        # The server has exactly the pool's connections: none half-opened and forgotten.
        await eventually(lambda: backends(admin, app_name), lambda found: set(found) == pids)
        for conn in held:
            await driver.release(pool, conn)
    finally:
        for conn in kept:
            await driver.release(pool, conn)
        # Bounded: a leaked connection would make a graceful close wait forever.
        await asyncio.wait_for(driver.close_pool(pool), 10)
    await eventually(lambda: backends(admin, app_name), lambda found: found == [])


async def test_cancelled_release_still_returns_the_connection(
    driver: Drv, shared_cluster: Any
) -> None:
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, None)
        await conn.execute("SET work_mem = '9MB'")
        release = asyncio.create_task(driver.release(pool, conn))
        await asyncio.sleep(0)
        release.cancel()
        with pytest.raises(asyncio.CancelledError):
            await release
        conn = await asyncio.wait_for(driver.acquire(pool, None), 10)
        assert await conn.fetchval("SHOW work_mem") != "9MB"  # the reset ran
        await driver.release(pool, conn)
    finally:
        await driver.close_pool(pool)


async def test_open_pool_on_a_closed_port_fails_and_terminates_cleanly(driver: Drv) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (dsn,) = split_dsn(f"postgresql://nobody@127.0.0.1:{port}/postgres")
    pool = driver.create_pool(dsn, {"min_size": 1, "max_size": 1})
    with pytest.raises(OSError) as caught:
        await driver.open_pool(pool)
    assert driver.classify_error(caught.value).value == "connection_lost"
    await driver.terminate_pool(pool)
    assert driver.pool_stats(pool).size == 0


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


async def test_cancelled_open_leaves_no_connection(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection, app_name: str
) -> None:
    options = {"min_size": 3, "max_size": 3, "server_settings": {"application_name": app_name}}
    pool = driver.create_pool(node_dsn(shared_cluster.primary), options)
    opening = asyncio.create_task(driver.open_pool(pool))
    await asyncio.sleep(0.002)
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await driver.terminate_pool(pool)
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
