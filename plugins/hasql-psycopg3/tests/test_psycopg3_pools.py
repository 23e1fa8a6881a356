"""Pools of the psycopg3 driver on a real server: sizes, statistics, user settings, lifecycle."""

from __future__ import annotations

import asyncio
import copy
import logging
import random
import time
from typing import Any

import psycopg
import psycopg_pool
import pytest
from hasql_psycopg3.driver import PsycopgDriver, PsycopgPoolTimeout
from psycopg3_helpers import backends, client_sockets, eventually, node_dsn, pool_tasks, shut

from hasql_core.driver import ErrorKind
from hasql_core.errors import ConfigurationError
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


async def test_pool_sizes_are_exactly_what_the_user_asked(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    options: dict[str, Any] = {"min_size": 3, "max_size": 5, "kwargs": {"prepare_threshold": 2}}
    snapshot = copy.deepcopy(options)
    kwargs_before = options["kwargs"]
    pool = driver.create_pool(node_dsn(cluster.primary, application_name=app_name), options)
    try:
        await driver.open_pool(pool)
        assert len(await backends(cluster, cluster.primary, app_name)) == 3
        assert driver.pool_stats(pool).size == 3

        held = [await driver.acquire(pool, 5.0) for _ in range(5)]
        assert len(await backends(cluster, cluster.primary, app_name)) == 5
        stats = driver.pool_stats(pool)
        assert (stats.min, stats.max, stats.size, stats.idle, stats.in_use) == (3, 5, 5, 0, 5)
        assert stats.free == 0
        for conn in held:
            await driver.release(pool, conn)
        assert len(await backends(cluster, cluster.primary, app_name)) == 5
    finally:
        await shut(driver, pool)
    assert options == snapshot
    assert options["kwargs"] is kwargs_before
    assert await eventually(lambda: _no_backends(cluster, app_name), "the connections to close")


async def test_pool_stats_in_use_is_not_the_pool_size(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = driver.create_pool(node_dsn(cluster.primary), {"min_size": 3, "max_size": 6})
    try:
        await driver.open_pool(pool)
        stats = driver.pool_stats(pool)
        assert (stats.size, stats.idle, stats.in_use, stats.free) == (3, 3, 0, 6)
        assert driver.free_size(pool) == 6  # the cheap path agrees

        conn = await driver.acquire(pool, 5.0)
        stats = driver.pool_stats(pool)
        assert (stats.size, stats.idle, stats.in_use) == (3, 2, 1)
        assert stats.free == 2 + (6 - 3)
        assert driver.free_size(pool) == 5

        await driver.release(pool, conn)
        stats = driver.pool_stats(pool)
        assert (stats.size, stats.idle, stats.in_use) == (3, 3, 0)
    finally:
        await shut(driver, pool)


@pytest.mark.parametrize("option", ["conninfo", "open"])
def test_reserved_pool_options_are_refused(
    cluster: LocalCluster, driver: PsycopgDriver, option: str
) -> None:
    options = {option: "x", "min_size": 1}
    with pytest.raises(ConfigurationError, match=option):
        driver.create_pool(node_dsn(cluster.primary), options)
    assert options == {option: "x", "min_size": 1}


async def test_create_pool_does_no_io(driver: PsycopgDriver) -> None:
    # Port 1 on loopback refuses connections: creating (not opening) the pool must not care.
    dsn = node_dsn_for_port(1)
    pool = driver.create_pool(dsn, {"min_size": 2})
    assert pool.closed
    assert pool_tasks(pool) == []
    await driver.terminate_pool(pool)


def node_dsn_for_port(port: int) -> Any:
    from hasql_core.dsn import parse_dsn

    return parse_dsn(f"postgresql://nobody@127.0.0.1:{port}/postgres?connect_timeout=2")


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
        conn = await driver.acquire(pool, 5.0)
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError) as info:
            await driver.acquire(pool, 0.2)
        assert time.monotonic() - started < 2.0
        assert isinstance(info.value, PsycopgPoolTimeout)
        assert isinstance(info.value.__cause__, psycopg_pool.PoolTimeout)
        assert driver.classify_error(info.value) is ErrorKind.OTHER
        assert driver.pool_stats(pool).in_use == 1
        await driver.release(pool, conn)
        again = await driver.acquire(pool, 1.0)
        await driver.release(pool, again)
    finally:
        await shut(driver, pool)


async def test_close_pool_waits_for_handed_out_connections(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 2, "max_size": 2}
    )
    await driver.open_pool(pool)
    conn = await driver.acquire(pool, 5.0)
    closing = asyncio.ensure_future(driver.close_pool(pool))
    done, _ = await asyncio.wait({closing}, timeout=0.3)
    assert not done, "close_pool returned while a connection was still handed out"
    with pytest.raises(psycopg_pool.PoolClosed):
        await driver.acquire(pool, 1.0)
    # The handed-out connection still works until it is given back.
    cur = await conn.execute("SELECT 42")
    assert await cur.fetchone() == (42,)
    await conn.rollback()
    await driver.release(pool, conn)
    await asyncio.wait_for(closing, 5.0)
    assert pool.closed
    assert pool_tasks(pool) == []
    assert conn.closed
    assert await eventually(
        lambda: _no_backends(cluster, app_name), "the pool's connections to close"
    )


async def _no_backends(cluster: LocalCluster, app_name: str) -> bool:
    return await backends(cluster, cluster.primary, app_name) == []


async def test_terminate_closes_handed_out_connections_at_once(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    # The server checks every 100 ms whether a client went away, even while a query runs.
    dsn = node_dsn(
        cluster.primary,
        application_name=app_name,
        options="-c client_connection_check_interval=100",
    )
    pool = driver.create_pool(dsn, {"min_size": 3, "max_size": 3})
    await driver.open_pool(pool)
    busy = await driver.acquire(pool, 5.0)
    idle = await driver.acquire(pool, 5.0)
    assert len(await backends(cluster, cluster.primary, app_name)) == 3

    query = asyncio.ensure_future(busy.execute("SELECT pg_sleep(60)"))
    await eventually(
        lambda: _is_running(cluster, app_name, "SELECT pg_sleep(60)"), "the query to start"
    )
    started = time.monotonic()
    await driver.terminate_pool(pool)
    assert time.monotonic() - started < 1.0
    with pytest.raises(psycopg.OperationalError) as info:
        await asyncio.wait_for(query, 5.0)
    assert time.monotonic() - started < 2.0
    assert driver.classify_error(info.value) is ErrorKind.CONNECTION_LOST
    assert driver.is_connection_closed(busy)
    assert driver.is_connection_closed(idle)
    assert pool.closed
    assert pool_tasks(pool) == []
    # Every server session ends, the one running pg_sleep(60) included.
    assert await eventually(lambda: _no_backends(cluster, app_name), "the server sessions to end")
    # Releasing after terminate is allowed and harmless.
    await driver.release(pool, busy)
    await driver.release(pool, idle)
    with pytest.raises(psycopg_pool.PoolClosed):
        await driver.acquire(pool, 1.0)


async def _is_running(cluster: LocalCluster, app_name: str, query: str) -> bool:
    rows = await asyncio.to_thread(
        cluster.execute,
        cluster.primary,
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app_name}' "
        f"AND state = 'active' AND query = '{query}'",
    )
    return rows == [("1",)]


async def test_cancelled_acquires_and_releases_leak_nothing(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    """Tasks cancelled at random points (queued in acquire, being served, holding the connection,
    in release) lose no connection: psycopg_pool alone loses one when ``putconn`` is cancelled
    while it waits for a lock, and the pool then counts a connection that no longer exists."""
    rng = random.Random(20261128)
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 1, "max_size": 3}
    )
    await driver.open_pool(pool)
    completed = 0

    async def user(query: bool) -> None:
        nonlocal completed
        conn = await driver.acquire(pool, 10.0)
        try:
            if query:
                await conn.execute("SELECT 1")
                await conn.rollback()
            else:
                await asyncio.sleep(0)
        finally:
            await driver.release(pool, conn)
        completed += 1

    loop = asyncio.get_running_loop()
    try:
        for round_ in range(300):
            tasks = [asyncio.ensure_future(user(round_ % 10 == 0)) for _ in range(8)]
            for task in tasks:
                if rng.random() < 0.6:
                    loop.call_later(rng.random() * 0.002, task.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results

        async def settled() -> bool:
            stats = driver.pool_stats(pool)
            return stats.in_use == 0 and stats.idle == stats.size

        await eventually(settled, "the pool to settle")
        stats = driver.pool_stats(pool)
        assert stats.size <= 3
        assert completed > 0
        assert len(await backends(cluster, cluster.primary, app_name)) == stats.size
        # All three connections can still be had: none was lost.
        held = [await driver.acquire(pool, 5.0) for _ in range(3)]
        assert len({conn.info.backend_pid for conn in held}) == 3
        for conn in held:
            await driver.release(pool, conn)
    finally:
        await shut(driver, pool)
    assert await eventually(lambda: _no_backends(cluster, app_name), "the connections to close")


async def test_expire_idle_replaces_every_connection_opened_before(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 2, "max_size": 3}
    )
    try:
        await driver.open_pool(pool)
        out = await driver.acquire(pool, 5.0)
        before = set(await backends(cluster, cluster.primary, app_name))
        assert len(before) == 2

        await driver.expire_idle(pool)
        # The handed-out connection is closed when it comes back, not reused.
        await driver.release(pool, out)
        assert out.closed

        async def replaced() -> bool:
            now = set(await backends(cluster, cluster.primary, app_name))
            stats = driver.pool_stats(pool)
            return not (now & before) and len(now) == 2 and stats.idle == 2

        await eventually(replaced, "every old connection to be replaced")
        held = [await driver.acquire(pool, 5.0) for _ in range(2)]
        assert not {conn.info.backend_pid for conn in held} & before
        for conn in held:
            await driver.release(pool, conn)
    finally:
        await shut(driver, pool)
    # On a closed pool it does nothing.
    await driver.expire_idle(pool)


async def test_failed_open_leaves_no_task_and_no_connection(driver: PsycopgDriver) -> None:
    pool = driver.create_pool(node_dsn_for_port(1), {"min_size": 2})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(driver.open_pool(pool), 0.5)
    assert pool.closed
    assert pool_tasks(pool) == []
    await driver.terminate_pool(pool)


@pytest.mark.hasql_cluster(replicas=1)
async def test_cancelled_open_on_a_frozen_host_leaves_nothing_behind(
    hasql_cluster: LocalCluster,
    driver: PsycopgDriver,
    app_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # psycopg_pool logs each abandoned attempt with its exception as an argument; pytest keeps log
    # records (and so the exception, its frames and the half-made connection) until the test ends.
    # Without a record nothing holds them, as in an application: that is the case checked here.
    caplog.set_level(logging.ERROR, logger="psycopg.pool")
    node = hasql_cluster.replicas[0]
    pool = driver.create_pool(
        node_dsn(node, application_name=app_name, connect_timeout="30"), {"min_size": 2}
    )
    assert client_sockets(node.port) == 0
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.open_pool(pool), 0.5)
        assert time.monotonic() - started < 2.0
        assert pool.closed
        # psycopg_pool's workers were in the middle of connecting; none may be left running.
        assert pool_tasks(pool) == []
        assert client_sockets(node.port) == 0
    finally:
        await asyncio.to_thread(hasql_cluster.thaw, node)

    # No socket of this process to the host is left (the attempts were abandoned, not leaked).
    assert client_sockets(node.port) == 0
    await driver.terminate_pool(pool)


async def test_connections_closed_by_the_server_are_not_handed_out(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 2, "max_size": 2}
    )
    try:
        await driver.open_pool(pool)
        first, _second = sorted(await backends(cluster, cluster.primary, app_name))
        await _terminate_backends(cluster, [first], app_name)
        # One idle connection is dead: the live one is handed out, whatever the pool's order.
        for _ in range(2):
            conn = await driver.acquire(pool, 5.0)
            assert conn.info.backend_pid != first
            cur = await conn.execute("SELECT 1")
            assert await cur.fetchone() == (1,)
            await conn.rollback()
            await driver.release(pool, conn)

        async def refilled() -> bool:
            return len(await backends(cluster, cluster.primary, app_name)) == 2

        await eventually(refilled, "the pool to replace the dead connection")
        await eventually(lambda: _idle(driver, pool, 2), "both connections to be idle")
        # Every idle connection is dead: the host looks gone, which the core must hear at once.
        await _terminate_backends(
            cluster, await backends(cluster, cluster.primary, app_name), app_name
        )
        with pytest.raises(psycopg.OperationalError) as info:
            await driver.acquire(pool, 5.0)
        assert driver.classify_error(info.value) is ErrorKind.CONNECTION_LOST
        assert driver.pool_stats(pool).in_use == 0
        # The pool heals by itself.
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
