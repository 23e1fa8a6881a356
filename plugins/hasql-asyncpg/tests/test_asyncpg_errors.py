"""classify_error on errors raised by real servers, and on asyncpg's own exception classes."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import asyncpg
import asyncpg.exceptions as apg
import pytest
from asyncpg_helpers import eventually, node_dsn

from hasql_core.driver import Driver, ErrorKind
from hasql_core.dsn import split_dsn

pytestmark = [pytest.mark.timeout(120), pytest.mark.hasql_cluster(replicas=1)]

Drv = Driver[Any, Any, Any]


async def raised(awaitable: Any) -> BaseException:
    try:
        await awaitable
    except Exception as error:
        return error
    pytest.fail("expected an exception")


@pytest.fixture
async def pool(driver: Drv, shared_cluster: Any) -> Any:
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 2})
    await driver.open_pool(pool)
    yield pool
    await asyncio.wait_for(driver.close_pool(pool), 10)


@pytest.fixture
async def replica_pool(driver: Drv, shared_cluster: Any) -> Any:
    pool = driver.create_pool(node_dsn(shared_cluster.replicas[0]), {"min_size": 1, "max_size": 1})
    await driver.open_pool(pool)
    yield pool
    await asyncio.wait_for(driver.close_pool(pool), 10)


async def test_write_on_a_standby_is_read_only(driver: Drv, replica_pool: Any) -> None:
    conn = await driver.acquire(replica_pool, None)
    try:
        error = await raised(conn.execute("CREATE TABLE hasql_never (id int)"))
        assert getattr(error, "sqlstate", None) == "25006"
        assert driver.classify_error(error) is ErrorKind.READ_ONLY
        # The connection is fine afterwards.
        assert driver.is_connection_closed(conn) is False
        assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
    finally:
        await driver.release(replica_pool, conn)


async def test_write_in_a_read_only_transaction_is_read_only(driver: Drv, pool: Any) -> None:
    conn = await driver.acquire(pool, None)
    try:
        async with conn.transaction(readonly=True):
            error = await raised(conn.execute("CREATE TEMP TABLE hasql_ro (id int)"))
        assert driver.classify_error(error) is ErrorKind.READ_ONLY
    finally:
        await driver.release(pool, conn)


async def test_terminated_backend_is_connection_lost(
    driver: Drv, pool: Any, admin: asyncpg.Connection
) -> None:
    conn = await driver.acquire(pool, None)
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
        await eventually(
            lambda: admin.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", pid
            ),
            lambda count: count == 1,
        )
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid) is True
        error = await raised(asyncio.wait_for(running, 10))
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST, repr(error)
        assert driver.is_connection_closed(conn) is True
        # asyncpg detaches a dead connection from its proxy at once: using it again raises the
        # InterfaceError of a released connection (classified OTHER, as the first error already
        # reported the loss).
        with pytest.raises(apg.InterfaceError, match="released back to the pool"):
            await conn.fetchval("SELECT 1")
    finally:
        await driver.release(pool, conn)
    # The pool replaces the dead connection.
    conn = await driver.acquire(pool, None)
    try:
        assert await conn.fetchval("SELECT 1") == 1
    finally:
        await driver.release(pool, conn)


async def test_sql_errors_are_other(driver: Drv, pool: Any) -> None:
    conn = await driver.acquire(pool, None)
    try:
        syntax = await raised(conn.execute("SELEC 1"))
        assert isinstance(syntax, apg.PostgresSyntaxError)
        assert driver.classify_error(syntax) is ErrorKind.OTHER
        division = await raised(conn.fetchval("SELECT 1 / 0"))
        assert driver.classify_error(division) is ErrorKind.OTHER
        await conn.execute("CREATE TEMP TABLE hasql_u (id int PRIMARY KEY)")
        await conn.execute("INSERT INTO hasql_u VALUES (1)")
        unique = await raised(conn.execute("INSERT INTO hasql_u VALUES (1)"))
        assert driver.classify_error(unique) is ErrorKind.OTHER
        canceled = await raised(conn.execute("SET statement_timeout = 50; SELECT pg_sleep(5)"))
        assert getattr(canceled, "sqlstate", None) == "57014"  # query_canceled: not the host
        assert driver.classify_error(canceled) is ErrorKind.OTHER
        await conn.execute("RESET statement_timeout")
    finally:
        await driver.release(pool, conn)


async def test_query_timeout_is_other_and_keeps_the_connection(driver: Drv, pool: Any) -> None:
    conn = await driver.acquire(pool, None)
    try:
        error = await raised(conn.fetchval("SELECT pg_sleep(10)", timeout=0.1))
        assert isinstance(error, asyncio.TimeoutError)
        assert driver.classify_error(error) is ErrorKind.OTHER
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await driver.release(pool, conn)


async def test_misuse_of_a_released_connection_is_other(driver: Drv, pool: Any) -> None:
    conn = await driver.acquire(pool, None)
    await driver.release(pool, conn)
    with pytest.raises(apg.InterfaceError) as caught:
        await conn.fetchval("SELECT 1")
    assert driver.classify_error(caught.value) is ErrorKind.OTHER


async def test_connect_to_a_closed_port_is_connection_lost(driver: Drv) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (dsn,) = split_dsn(f"postgresql://nobody@127.0.0.1:{port}/postgres")
    error = await raised(driver.connect_monitor(dsn, 5))
    assert isinstance(error, ConnectionRefusedError)
    assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST


async def test_wrong_password_is_other(driver: Drv, shared_cluster: Any) -> None:
    node = shared_cluster.primary
    dsn = node_dsn(node)
    (bad,) = split_dsn(f"postgresql://{dsn.user}:wrong@127.0.0.1:{node.port}/{dsn.database}")
    error = await raised(driver.connect_monitor(bad, 5))
    assert isinstance(error, apg.InvalidPasswordError)
    assert driver.classify_error(error) is ErrorKind.OTHER


async def test_stopped_server_is_connection_lost_or_unavailable(
    driver: Drv, hasql_cluster: Any
) -> None:
    replica = hasql_cluster.replicas[0]
    pool = driver.create_pool(node_dsn(replica), {"min_size": 1, "max_size": 1})
    await driver.open_pool(pool)
    try:
        conn = await driver.acquire(pool, None)
        try:
            hasql_cluster.stop(replica, "fast")  # the server ends every session (57P01) and exits
            error = await raised(conn.fetchval("SELECT 1"))
            assert driver.classify_error(error) in (
                ErrorKind.CONNECTION_LOST,
                ErrorKind.UNAVAILABLE,
            ), repr(error)
        finally:
            await driver.release(pool, conn)
        refused = await raised(driver.acquire(pool, None))
        assert driver.classify_error(refused) is ErrorKind.CONNECTION_LOST, repr(refused)
    finally:
        await driver.terminate_pool(pool)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (apg.ReadOnlySQLTransactionError("read-only"), ErrorKind.READ_ONLY),
        (apg.AdminShutdownError("terminating connection"), ErrorKind.UNAVAILABLE),
        (apg.CrashShutdownError("crash"), ErrorKind.UNAVAILABLE),
        (apg.CannotConnectNowError("the database system is starting up"), ErrorKind.UNAVAILABLE),
        (apg.ConnectionDoesNotExistError("closed in the middle"), ErrorKind.CONNECTION_LOST),
        (apg.ConnectionFailureError("failure"), ErrorKind.CONNECTION_LOST),
        (apg.ClientCannotConnectError("cannot"), ErrorKind.CONNECTION_LOST),
        (apg.InterfaceError("connection is closed"), ErrorKind.CONNECTION_LOST),
        (apg.InterfaceError("pool is closing"), ErrorKind.OTHER),
        (apg.QueryCanceledError("canceling statement"), ErrorKind.OTHER),
        (apg.TooManyConnectionsError("too many"), ErrorKind.OTHER),
        (ConnectionResetError(104, "reset"), ErrorKind.CONNECTION_LOST),
        (ConnectionError("unexpected connection_lost() call"), ErrorKind.CONNECTION_LOST),
        (socket.gaierror(-2, "Name or service not known"), ErrorKind.CONNECTION_LOST),
        (asyncio.TimeoutError(), ErrorKind.OTHER),
        (TimeoutError(), ErrorKind.OTHER),
        (ValueError("x"), ErrorKind.OTHER),
        (asyncio.CancelledError(), ErrorKind.OTHER),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else value.name,
)
def test_exception_classes(driver: Drv, error: BaseException, kind: ErrorKind) -> None:
    assert driver.classify_error(error) is kind
