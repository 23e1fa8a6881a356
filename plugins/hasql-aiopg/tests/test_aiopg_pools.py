"""aiopg-specific pool behaviour against a real server: the objects handed out, option handling,
and each aiopg defect the driver works around (lost wake-ups, on_connect leaks, closing a pool
with a closed connection out, a connection left in a transaction). The contract's own scenarios
are in hasql-core's driver suite (test_driver_suite.py). Connection counts come from the server."""

from __future__ import annotations

import asyncio
from typing import Any

import aiopg
import psycopg2
import pytest
from aiopg_helpers import IS_SA, backends, eventually, fetchval, raw_of

from hasql_core.driver import Driver
from hasql_core.errors import ConfigurationError
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)

Drv = Driver[Any, Any, Any]


async def test_handed_out_objects_are_aiopgs_own(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """The pool is aiopg's Pool (aiopg.sa's Engine); connections are aiopg's (SAConnection)."""
    pool = await make_pool(cluster.primary, minsize=1, maxsize=2)
    connection = await driver.acquire(pool, None)
    try:
        if IS_SA:
            import sqlalchemy as sa
            from aiopg.sa import Engine, SAConnection

            assert isinstance(pool, Engine)
            assert isinstance(connection, SAConnection)
            assert await connection.scalar(sa.select(sa.literal_column("41") + 1)) == 42
        else:
            assert isinstance(pool, aiopg.Pool)
            assert isinstance(connection, aiopg.Connection)
        assert await fetchval(connection, "SELECT pg_is_in_recovery()") is False
        assert not driver.is_connection_closed(connection)
    finally:
        await driver.release(pool, connection)


async def test_options_reach_aiopg_unchanged_and_create_pool_does_no_io(
    driver: Drv, cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    seen: list[aiopg.Connection] = []

    async def on_connect(connection: aiopg.Connection) -> None:
        seen.append(connection)

    options = {"minsize": 2, "maxsize": 3, "timeout": 7.5, "on_connect": on_connect}
    before = dict(options)
    pool = await make_pool(cluster.primary, open=False, **options)
    assert options == before
    assert await backends(cluster, cluster.primary, app_name) == []
    assert (pool.minsize, pool.maxsize, pool.timeout) == (2, 3, 7.5)
    await driver.open_pool(pool)
    assert len(await backends(cluster, cluster.primary, app_name)) == 2
    assert len(seen) == 2
    assert options == before


async def test_pool_options_that_cannot_work_are_refused_at_once(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """``dsn`` comes from the manager; asyncpg's spelling of sizes is not an aiopg option and
    would make every connect fail; aiopg's own checks still apply."""
    with pytest.raises(ConfigurationError, match="dsn"):
        await make_pool(cluster.primary, open=False, dsn="host=elsewhere")
    with pytest.raises(ConfigurationError, match="min_size") as info:
        await make_pool(cluster.primary, open=False, min_size=1)
    assert cluster.password not in str(info.value)
    with pytest.raises(ValueError, match="maxsize"):
        await make_pool(cluster.primary, open=False, minsize=3, maxsize=2)
    # A libpq parameter is fine: it goes to psycopg2 as aiopg would pass it.
    pool = await make_pool(cluster.primary, connect_timeout=5, minsize=1)
    assert driver.pool_stats(pool).size == 1


async def test_pool_sizes_are_exact_and_stats_mean_what_the_contract_says(
    driver: Drv, cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    pool = await make_pool(cluster.primary, minsize=2, maxsize=3)
    stats = driver.pool_stats(pool)
    assert (stats.min, stats.max, stats.size, stats.idle, stats.in_use) == (2, 3, 2, 2, 0)
    assert stats.free == 3 and driver.free_size(pool) == 3  # idle + unopened capacity
    held = [await driver.acquire(pool, None) for _ in range(3)]
    assert len(await backends(cluster, cluster.primary, app_name)) == 3
    stats = driver.pool_stats(pool)
    assert (stats.size, stats.idle, stats.in_use, stats.free) == (3, 0, 3, 0)
    assert driver.free_size(pool) == 0
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(driver.acquire(pool, None), 0.3)
    assert len(await backends(cluster, cluster.primary, app_name)) == 3
    for connection in held:
        await driver.release(pool, connection)
    stats = driver.pool_stats(pool)
    assert (stats.size, stats.idle, stats.in_use, stats.free) == (3, 3, 0, 3)
    assert driver.free_size(pool) == 3


async def test_a_waiter_cancelled_as_it_is_woken_passes_the_wakeup_on(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """aiopg's own pool loses this wake-up (asyncio.Condition), leaving the second waiter asleep
    next to an idle connection until the pool's timeout; through the driver it gets it at once."""
    pool = await make_pool(cluster.primary, minsize=1, maxsize=1, timeout=30)
    held = await driver.acquire(pool, None)
    first = asyncio.ensure_future(driver.acquire(pool, None))
    second = asyncio.ensure_future(driver.acquire(pool, None))
    await asyncio.sleep(0)  # both are queued now
    assert not first.done() and not second.done()
    await driver.release(pool, held)
    first.cancel()  # woken (handed the slot) but cancelled before it could run
    connection = await asyncio.wait_for(second, 5)
    assert first.cancelled()
    await driver.release(pool, connection)
    assert driver.free_size(pool) == 1


async def test_releasing_a_closed_connection_lets_a_waiter_in(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """aiopg wakes no waiter when a closed connection comes back (here: closed by aiopg itself when
    a statement's timeout passed); through the driver the waiter opens a new connection at once."""
    pool = await make_pool(cluster.primary, minsize=1, maxsize=1, timeout=30)
    held = await driver.acquire(pool, None)
    waiter = asyncio.ensure_future(driver.acquire(pool, None))
    with pytest.raises(asyncio.TimeoutError):
        await fetchval(held, "SELECT pg_sleep(5)", timeout=0.1)
    assert driver.is_connection_closed(held)
    await driver.release(pool, held)
    connection = await asyncio.wait_for(waiter, 5)
    assert await fetchval(connection, "SELECT 1") == 1
    await driver.release(pool, connection)


@pytest.mark.hasql_cluster(replicas=0)
async def test_an_open_cancelled_while_connecting_leaves_nothing_open(
    driver: Drv, hasql_proxied_cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    """Connections are slow through a proxy adding latency; the open is cancelled after the first
    one: terminate_pool (what the core does next) closes it, and the one being made is closed."""
    cluster = hasql_proxied_cluster
    node = cluster.primary
    proxy = cluster.proxy(node)
    await asyncio.to_thread(proxy.set_mode, "latency", delay=0.05)
    pool = await make_pool(node, open=False, via=proxy.port, minsize=6, maxsize=6)
    opening = asyncio.ensure_future(driver.open_pool(pool))

    async def one_connected() -> bool:
        return len(await backends(cluster, node, app_name)) >= 1

    await eventually(one_connected, "the first connection of the pool")
    assert not opening.done()
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await driver.terminate_pool(pool)
    assert driver.pool_stats(pool).size == 0

    async def none_left() -> bool:
        return await backends(cluster, node, app_name) == []

    await eventually(none_left, "every connection of the cancelled pool closed", timeout=5)


async def test_a_connection_whose_on_connect_is_cancelled_is_closed(
    driver: Drv, cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    """aiopg drops such a connection without closing it (it stays open until garbage collection)."""
    entered = asyncio.Event()
    calls = 0

    async def on_connect(connection: aiopg.Connection) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:  # the second connection's set-up never ends
            entered.set()
            await asyncio.Event().wait()

    pool = await make_pool(cluster.primary, open=False, minsize=2, maxsize=2, on_connect=on_connect)
    opening = asyncio.ensure_future(driver.open_pool(pool))
    await entered.wait()
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert len(await backends(cluster, cluster.primary, app_name)) == 1  # the first, idle
    await driver.terminate_pool(pool)

    async def none_left() -> bool:
        return await backends(cluster, cluster.primary, app_name) == []

    await eventually(none_left, "both connections closed", timeout=5)


async def test_close_pool_waits_for_handed_out_connections(
    driver: Drv, cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    """Also for one that comes back closed: aiopg's own wait_closed() would then wait forever."""
    pool = await make_pool(cluster.primary, minsize=2, maxsize=3)
    held = await driver.acquire(pool, None)
    closing = asyncio.ensure_future(driver.close_pool(pool))
    done, _ = await asyncio.wait({closing}, timeout=0.2)
    assert not done
    with pytest.raises(RuntimeError, match="closing"):
        await driver.acquire(pool, None)
    with pytest.raises(asyncio.TimeoutError):
        await fetchval(held, "SELECT pg_sleep(5)", timeout=0.1)  # aiopg closes it
    await driver.release(pool, held)
    await asyncio.wait_for(closing, 5)

    async def none_left() -> bool:
        return await backends(cluster, cluster.primary, app_name) == []

    await eventually(none_left, "every connection closed", timeout=5)
    assert driver.pool_stats(pool).size == 0


async def test_no_password_in_reprs_and_messages(
    driver: Drv, cluster: LocalCluster, make_pool: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    pool = await make_pool(cluster.primary, minsize=1, maxsize=2)
    connection = await driver.acquire(pool, None)
    shown = [repr(pool), str(pool), repr(connection), repr(driver.pool_stats(pool))]
    if IS_SA:
        shown.append(pool.dsn)
        assert "***" in pool.dsn
    shown.append(repr(raw_of(connection).dsn))
    await driver.release(pool, connection)
    stopped = cluster.primary.port + 10_000 if cluster.primary.port < 50_000 else 1
    bad = await make_pool(cluster.primary, open=False, minsize=1, port=stopped)
    with pytest.raises(psycopg2.OperationalError) as info:
        await driver.open_pool(bad)
    shown += [str(info.value), repr(info.value)]
    assert all(cluster.password not in text for text in shown), shown
    assert cluster.password not in caplog.text


async def test_a_connection_left_in_a_transaction_is_closed_not_pooled(
    driver: Drv, cluster: LocalCluster, make_pool: Any, app_name: str
) -> None:
    """No rollback round trip on release: the connection is closed instead (as aiopg does), and
    without aiopg's ResourceWarning (this suite runs with warnings as errors)."""
    pool = await make_pool(cluster.primary, minsize=1, maxsize=1)
    connection = await driver.acquire(pool, None)
    pid = await fetchval(connection, "BEGIN; SELECT pg_backend_pid()")
    await driver.release(pool, connection)
    assert driver.is_connection_closed(connection)
    assert driver.pool_stats(pool).size == 0 and driver.free_size(pool) == 1

    async def gone() -> bool:
        return pid not in await backends(cluster, cluster.primary, app_name)

    await eventually(gone, "the backend of the closed connection gone", timeout=5)
    fresh = await driver.acquire(pool, None)
    assert await fetchval(fresh, "SELECT pg_backend_pid()") != pid
    await driver.release(pool, fresh)
