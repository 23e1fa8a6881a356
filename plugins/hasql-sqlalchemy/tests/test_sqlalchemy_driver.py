"""Driver-level tests of hasql-sqlalchemy beyond the shared suites: names, DSN handling, pool
sizes with overflow, cancelled connects, error facts, hasql's README example and secrets."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hasql_sqlalchemy import AsyncSqlalchemyDriver, SqlalchemyDriver
from hasql_sqlalchemy._url import engine_arguments
from sqlalchemy import event, text
from sqlalchemy.util import await_only
from sqlalchemy_helpers import DRIVER_NAME, dialect_dsn

from hasql_core import PoolManager
from hasql_core.driver import Driver, ErrorKind
from hasql_core.dsn import parse_dsn
from hasql_core.errors import AcquireTimeoutError
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import make_driver

pytestmark = pytest.mark.timeout(120)


def _backends(cluster: LocalCluster, node: Any, app_name: str) -> int:
    rows = cluster.execute(
        node,
        "SELECT count(*) FROM pg_stat_activity "
        f"WHERE backend_type = 'client backend' AND application_name = '{app_name}'",
    )
    return int(rows[0][0])


@contextlib.contextmanager
def _without_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off: what only a collection would close stays open."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def test_both_names_resolve_through_entry_points() -> None:
    assert type(make_driver("asyncsqlalchemy")) is AsyncSqlalchemyDriver
    assert type(make_driver("sqlalchemy")) is SqlalchemyDriver


def test_scheme_picks_the_dialect_and_options_stay_untouched() -> None:
    options = {"pool_size": 3, "connect_args": {"server_settings": {"jit": "off"}}}
    snapshot = {"pool_size": 3, "connect_args": {"server_settings": {"jit": "off"}}}
    for text_dsn, driver in [
        ("postgresql://u:pw@h:5433/db", "asyncpg"),
        ("postgres://u:pw@h/db", "asyncpg"),
        ("host=h user=u password=pw dbname=db", "asyncpg"),
        ("postgresql+asyncpg://u:pw@h/db", "asyncpg"),
        ("postgresql+psycopg://u:pw@h/db", "psycopg"),
    ]:
        url, kwargs = engine_arguments(parse_dsn(text_dsn), options)
        assert url.drivername == f"postgresql+{driver}"
        assert (url.host, url.username, url.password, url.database) == ("h", "u", "pw", "db")
        assert "pw" not in repr(url)
        assert kwargs["pool_size"] == 3
    assert options == snapshot
    url, _ = engine_arguments(parse_dsn("postgresql://u@h/db"), {}, "psycopg")
    assert url.drivername == "postgresql+psycopg"


def test_libpq_parameters_keep_their_meaning_for_asyncpg() -> None:
    dsn = parse_dsn(
        "postgresql://u@h/db?application_name=app&options=-c%20work_mem%3D7MB"
        "&connect_timeout=3&sslmode=disable&target_session_attrs=read-write&keepalives=1"
    )
    _, kwargs = engine_arguments(dsn, {"connect_args": {"server_settings": {"jit": "off"}}})
    args = kwargs["connect_args"]
    assert args["server_settings"] == {
        "application_name": "app",
        "options": "-c work_mem=7MB",
        "jit": "off",
    }
    assert args["timeout"] == 3.0 and args["ssl"] == "disable"
    assert "target_session_attrs" not in args and "keepalives" not in args
    # psycopg: libpq reads them itself (host selection excepted: hasql-core chooses hosts).
    url, _ = engine_arguments(
        parse_dsn(
            "postgresql+psycopg://u@h/db?application_name=app&target_session_attrs=read-write"
        ),
        {},
    )
    assert dict(url.query) == {"application_name": "app"}


async def test_pool_sizes_are_exact_with_overflow(
    shared_cluster: LocalCluster, dialect: str, app_name: str
) -> None:
    """pool_size=2, max_overflow=1: two sessions per host once the pool opens, three at most
    (plus the monitor's one, named by the DSN too); an overflow connection is closed when it comes
    back."""
    cluster = shared_cluster
    options = {"pool_size": 2, "max_overflow": 1}
    dsn = dialect_dsn(cluster.dsn, dialect) + f"?application_name={app_name}"
    async with PoolManager(
        dsn, driver=DRIVER_NAME, pool_factory_kwargs=options, acquire_timeout=5
    ) as pm:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        assert options == {"pool_size": 2, "max_overflow": 1}
        for node in cluster.nodes:
            assert await asyncio.to_thread(_backends, cluster, node, app_name) == 2 + 1
        primary_pool = pm.pools[0]
        held = [await pm.acquire_master() for _ in range(3)]
        stats = pm.driver.pool_stats(primary_pool)
        assert (stats.min, stats.max, stats.size, stats.idle, stats.in_use) == (2, 3, 3, 0, 3)
        assert pm.driver.free_size(primary_pool) == 0
        with pytest.raises(AcquireTimeoutError):
            await pm.acquire_master(timeout=0.3)
        assert await asyncio.to_thread(_backends, cluster, cluster.primary, app_name) == 3 + 1
        for conn in held:
            await pm.release(conn)
        stats = pm.driver.pool_stats(primary_pool)
        assert (stats.size, stats.idle, stats.in_use) == (2, 2, 0)


async def test_hasql_readme_example(shared_cluster: LocalCluster, dialect: str) -> None:
    """hasql's asyncsqlalchemy example with the import changed and the driver named: reads and
    writes work, and pool_size=10, max_overflow=5 gives at most 15 connections per host."""
    multihost_dsn = dialect_dsn(shared_cluster.dsn, dialect)
    pool = PoolManager(
        multihost_dsn,
        driver="asyncsqlalchemy",
        fallback_master=True,
        pool_factory_kwargs=dict(pool_size=10, max_overflow=5),  # noqa: C408 - as in hasql
    )
    try:
        await pool.ready(masters_count=1, replicas_count=1)
        async with pool.acquire_master() as conn:
            assert (await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar() is False
        async with pool.acquire_replica() as conn:
            assert (await conn.execute(text("SELECT pg_is_in_recovery()"))).scalar() is True
        held = [await pool.acquire_master() for _ in range(15)]
        with pytest.raises(AcquireTimeoutError):
            await pool.acquire_master(timeout=0.3)
        assert pool.driver.pool_stats(pool.pools[0]).size == 15
        for conn in held:
            await pool.release(conn)
    finally:
        await pool.close()


async def test_write_on_standby_is_read_only_and_terminated_backend_is_lost(
    shared_cluster: LocalCluster, dialect: str
) -> None:
    """SQLAlchemy's wrapped DBAPI errors give the server's SQLSTATE (25006 on a standby) and a
    backend ended by pg_terminate_backend reads as a lost connection."""
    dsn = dialect_dsn(shared_cluster.dsn, dialect)
    async with PoolManager(dsn, driver=DRIVER_NAME, pool_factory_kwargs={"pool_size": 1}) as pm:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        async with pm.acquire_replica() as conn:
            with pytest.raises(Exception) as info:
                await conn.execute(text("CREATE TABLE refused (x int)"))
            facts = pm.driver.error_facts(info.value)
            assert facts.sqlstate == "25006", repr(info.value)
            assert pm.driver.classify_error(info.value) is ErrorKind.READ_ONLY
            await conn.rollback()
        conn = await pm.acquire_master()
        try:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar()
            await conn.commit()
            await asyncio.to_thread(
                shared_cluster.execute,
                shared_cluster.primary,
                f"SELECT pg_terminate_backend({pid})",
            )
            with pytest.raises(Exception) as info:
                await conn.execute(text("SELECT 1"))
            assert pm.driver.classify_error(info.value) is ErrorKind.CONNECTION_LOST, repr(
                info.value
            )
        finally:
            await pm.release(conn)
        async with pm.acquire_master() as conn:  # the pool replaced it
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1


async def test_no_password_in_reprs_errors_or_logs(
    shared_cluster: LocalCluster, dialect: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = shared_cluster.password
    dsn = dialect_dsn(shared_cluster.dsn, dialect)
    async with PoolManager(
        dsn, driver=DRIVER_NAME, pool_factory_kwargs={"pool_size": 1, "echo": True}
    ) as pm:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        async with pm.acquire_master() as conn:
            await conn.execute(text("SELECT 1"))
            texts = [repr(pm), repr(conn.engine), str(conn.engine.url), repr(pm.pools)]
        wrong = dsn.replace(password, "not-the-password")
        bad = PoolManager(wrong, driver=DRIVER_NAME, refresh_timeout=1)
        try:
            with pytest.raises(asyncio.TimeoutError) as info:
                await bad.ready(masters_count=1, replicas_count=0, timeout=2)
            texts.append(str(info.value))
        finally:
            await bad.close()
    for shown in [*texts, caplog.text]:
        assert password not in shown
        assert "not-the-password" not in shown


async def test_cancelled_acquires_and_releases_leave_no_session_beyond_the_pool(
    shared_cluster: LocalCluster, driver: Driver[Any, Any, Any], app_name: str
) -> None:
    """Acquires, statements and releases cancelled at random (pool_size=1, max_overflow=2: the
    overflow connections are closed when they come back, so connects are cancelled too) leave
    the server with exactly the sessions the pool counts as open.

    A connect cancelled mid-handshake must close its half-made connection at once: psycopg's own
    ``connect()`` leaves it to the garbage collector (the session lives as long as the
    cancellation's traceback), so the cyclic collector is kept off here to make that show."""
    node = shared_cluster.primary
    dsn = parse_dsn(f"{node.dsn}?application_name={app_name}")  # the driver picks the dialect
    pool = driver.create_pool(dsn, {"pool_size": 1, "max_overflow": 2})
    rng = random.Random(20260517)

    async def user() -> None:
        conn = await driver.acquire(pool, 10.0)
        try:
            await conn.exec_driver_sql("SELECT pg_sleep(0.001)")
        except BaseException:
            driver.discard(pool, conn)  # an interrupted statement: the core never resets it
            raise
        try:
            await driver.release(pool, conn)
        except BaseException:
            driver.discard(pool, conn)  # as the core does when its caller is cancelled
            raise

    def sessions() -> int:
        return _backends(shared_cluster, node, app_name)

    try:
        await asyncio.wait_for(driver.open_pool(pool), 10)
        with _without_cyclic_gc():
            for _ in range(40):
                tasks = [asyncio.ensure_future(user()) for _ in range(10)]
                await asyncio.sleep(rng.random() * 0.01)
                for task in tasks:
                    if rng.random() < 0.6:
                        task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                del tasks
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 5
            while True:
                stats = driver.pool_stats(pool)
                assert stats.in_use == 0, stats
                assert stats.size <= stats.max, stats
                on_server = await asyncio.to_thread(sessions)
                if on_server == stats.size:
                    break
                assert loop.time() < deadline, (
                    f"the server has {on_server} sessions of the pool, its statistics {stats}"
                )
                await asyncio.sleep(0.05)
    finally:
        await driver.terminate_pool(pool)


async def test_connect_cancelled_in_its_connect_hooks_is_not_counted(
    shared_cluster: LocalCluster, driver: Driver[Any, Any, Any], app_name: str
) -> None:
    """An acquire cancelled while SQLAlchemy runs the pool's connect hooks (for asyncpg the
    dialect's set-up queries) leaves no session, and the statistics count none: SQLAlchemy closes
    such a connection without a ``close`` event."""
    node = shared_cluster.primary
    dsn = parse_dsn(f"{node.dsn}?application_name={app_name}")
    pool = driver.create_pool(dsn, {"pool_size": 1, "max_overflow": 0})
    in_hook = asyncio.Event()

    def slow_hook(dbapi_connection: Any, record: Any) -> None:
        in_hook.set()
        await_only(asyncio.sleep(30))

    event.listen(pool.sync_engine.pool, "connect", slow_hook)
    try:
        acquiring = asyncio.ensure_future(driver.acquire(pool, 10.0))
        await asyncio.wait_for(in_hook.wait(), 10)
        acquiring.cancel()
        with pytest.raises(asyncio.CancelledError):
            await acquiring
        stats = driver.pool_stats(pool)
        assert (stats.size, stats.idle, stats.in_use) == (0, 0, 0), stats
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while await asyncio.to_thread(_backends, shared_cluster, node, app_name):
            assert loop.time() < deadline, "the cancelled connect left its session open"
            await asyncio.sleep(0.05)
        event.remove(pool.sync_engine.pool, "connect", slow_hook)
        conn = await asyncio.wait_for(driver.acquire(pool, 10.0), 10)
        assert driver.pool_stats(pool).size == 1
        await driver.release(pool, conn)
    finally:
        await driver.terminate_pool(pool)
