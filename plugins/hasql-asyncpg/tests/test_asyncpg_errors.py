"""asyncpg's own errors: what its exception classes and its client-side failures say.

The server answers every driver must read the same way (read-only, terminated sessions, SQL
errors, refused connections) are in hasql-core's driver suite (test_asyncpg_driver_suite.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import asyncpg.exceptions as apg
import pytest
from asyncpg_helpers import eventually, node_dsn

from hasql_core.driver import Driver, ErrorFacts, ErrorKind
from hasql_core.dsn import split_dsn

pytestmark = pytest.mark.timeout(120)

Drv = Driver[Any, Any, Any]


async def raised(awaitable: Any) -> BaseException:
    try:
        await awaitable
    except Exception as error:
        return error
    pytest.fail("expected an exception")


@pytest.fixture
async def pool(driver: Drv, shared_cluster: Any) -> AsyncIterator[Any]:
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 2})
    await driver.open_pool(pool)
    yield pool
    await asyncio.wait_for(driver.close_pool(pool), 10)


async def test_query_timeout_argument_is_other_and_keeps_the_connection(
    driver: Drv, pool: Any
) -> None:
    """asyncpg's own ``timeout=`` of a query cancels it on the server and keeps the connection."""
    conn = await driver.acquire(pool, None)
    try:
        error = await raised(conn.fetchval("SELECT pg_sleep(10)", timeout=0.1))
        assert isinstance(error, asyncio.TimeoutError)
        assert driver.error_facts(error) == ErrorFacts()
        assert driver.classify_error(error) is ErrorKind.OTHER
        assert await conn.fetchval("SELECT 2") == 2
    finally:
        await driver.release(pool, conn)


async def test_a_connection_asyncpg_took_back_reads_as_lost(driver: Drv, pool: Any) -> None:
    """asyncpg raises the same InterfaceError for a connection the user released and for one it
    took back itself because the server closed it. The core classifies only errors of connections
    it still has handed out, where the second meaning is the only possible one: a lost connection."""
    conn = await driver.acquire(pool, None)
    await driver.release(pool, conn)
    with pytest.raises(apg.InterfaceError, match="released back to the pool") as caught:
        await conn.fetchval("SELECT 1")
    assert driver.error_facts(caught.value) == ErrorFacts(connection_lost=True)


async def test_terminated_connection_is_detached_from_its_proxy(
    driver: Drv, pool: Any, shared_cluster: Any
) -> None:
    """asyncpg detaches a connection the server closed from its proxy at once: the proxy reads as
    closed, and using it again raises the InterfaceError of a released connection."""
    conn = await driver.acquire(pool, None)
    pid = await conn.fetchval("SELECT pg_backend_pid()")
    running = asyncio.ensure_future(conn.fetchval("SELECT pg_sleep(30)"))
    try:
        node = shared_cluster.primary

        async def active() -> Any:
            rows = await asyncio.to_thread(
                shared_cluster.execute,
                node,
                f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'",
            )
            return rows == [("1",)]

        await eventually(active, lambda running: bool(running))
        await asyncio.to_thread(shared_cluster.execute, node, f"SELECT pg_terminate_backend({pid})")
        error = await raised(asyncio.wait_for(running, 10))
        assert isinstance(error, apg.ConnectionDoesNotExistError)
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST
        assert driver.is_connection_closed(conn) is True
        with pytest.raises(apg.InterfaceError, match="released back to the pool"):
            await conn.fetchval("SELECT 1")
    finally:
        running.cancel()
        driver.discard(pool, conn)


async def test_wrong_password_is_sqlstate_28p01_other(driver: Drv, shared_cluster: Any) -> None:
    node = shared_cluster.primary
    dsn = node_dsn(node)
    (bad,) = split_dsn(f"postgresql://{dsn.user}:wrong@127.0.0.1:{node.port}/{dsn.database}")
    error = await raised(driver.connect_monitor(bad, 5))
    assert isinstance(error, apg.InvalidPasswordError)
    assert driver.error_facts(error) == ErrorFacts(sqlstate="28P01")
    assert driver.classify_error(error) is ErrorKind.OTHER


@pytest.mark.parametrize(
    ("error", "facts", "kind"),
    [
        (apg.ReadOnlySQLTransactionError("ro"), ErrorFacts("25006"), ErrorKind.READ_ONLY),
        (apg.AdminShutdownError("terminating"), ErrorFacts("57P01"), ErrorKind.CONNECTION_LOST),
        (apg.CrashShutdownError("crash"), ErrorFacts("57P02"), ErrorKind.CONNECTION_LOST),
        (apg.CannotConnectNowError("starting up"), ErrorFacts("57P03"), ErrorKind.UNAVAILABLE),
        (
            apg.ConnectionDoesNotExistError("closed in the middle"),
            ErrorFacts("08003", connection_lost=True),
            ErrorKind.CONNECTION_LOST,
        ),
        (apg.ConnectionFailureError("failure"), ErrorFacts("08006"), ErrorKind.CONNECTION_LOST),
        (apg.ClientCannotConnectError("cannot"), ErrorFacts("08001"), ErrorKind.CONNECTION_LOST),
        (
            apg.InterfaceError("connection is closed"),
            ErrorFacts(connection_lost=True),
            ErrorKind.CONNECTION_LOST,
        ),
        (apg.InterfaceError("pool is closing"), ErrorFacts(), ErrorKind.OTHER),
        (
            apg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            ),
            ErrorFacts(connection_lost=True),
            ErrorKind.CONNECTION_LOST,
        ),
        (apg.QueryCanceledError("canceling statement"), ErrorFacts("57014"), ErrorKind.OTHER),
        (apg.TooManyConnectionsError("too many"), ErrorFacts("53300"), ErrorKind.OTHER),
        (
            ConnectionError("unexpected connection_lost() call"),
            ErrorFacts(connection_lost=True),
            ErrorKind.CONNECTION_LOST,
        ),
        (
            socket.gaierror(-2, "Name or service not known"),
            ErrorFacts(connection_lost=True),
            ErrorKind.CONNECTION_LOST,
        ),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, BaseException) else None,
)
def test_exception_classes(
    driver: Drv, error: BaseException, facts: ErrorFacts, kind: ErrorKind
) -> None:
    assert driver.error_facts(error) == facts
    assert driver.classify_error(error) is kind
