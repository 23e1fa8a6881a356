"""error_facts() for what is particular to psycopg2 and aiopg (the common cases are in hasql-core's
driver suite): an OperationalError that carries a SQLSTATE, the cause chain, and aiopg's
statement_timeout reported as cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2
import pytest
from aiopg_helpers import fetchval

from hasql_core.driver import Driver, ErrorFacts, ErrorKind
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(60)

Drv = Driver[Any, Any, Any]


async def _error_of(awaitable: Any) -> BaseException:
    try:
        await awaitable
    except BaseException as error:
        return error
    raise AssertionError("expected an error")


async def test_an_operational_error_with_a_sqlstate_is_not_a_lost_connection(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """55P03 (lock not available) is an OperationalError in psycopg2, but the session lives on."""
    cluster.execute(cluster.primary, "CREATE TABLE IF NOT EXISTS locked (x int)")
    pool = await make_pool(cluster.primary, minsize=2, maxsize=2)
    holder, waiter = await driver.acquire(pool, None), await driver.acquire(pool, None)
    await fetchval(holder, "BEGIN; LOCK TABLE locked; SELECT 1")
    await fetchval(waiter, "SELECT set_config('lock_timeout', '50ms', false)")
    error = await _error_of(fetchval(waiter, "SELECT count(*) FROM locked"))
    assert isinstance(error, psycopg2.OperationalError)
    assert driver.error_facts(error) == ErrorFacts(sqlstate="55P03", connection_lost=False)
    assert driver.classify_error(error) is ErrorKind.OTHER
    assert await fetchval(waiter, "SELECT 1") == 1
    await fetchval(holder, "ROLLBACK; SELECT 1")
    for connection in (holder, waiter):
        await driver.release(pool, connection)


def test_facts_follow_the_cause_chain_and_never_raise(driver: Drv) -> None:
    class Odd(psycopg2.DatabaseError):  # type: ignore[misc]
        @property
        def pgcode(self) -> str:
            raise RuntimeError("broken")

    wrapped = RuntimeError("while saving")
    wrapped.__cause__ = psycopg2.OperationalError("server closed the connection unexpectedly")
    assert driver.classify_error(wrapped) is ErrorKind.CONNECTION_LOST
    assert driver.error_facts(ConnectionResetError()) == ErrorFacts(connection_lost=True)
    assert driver.error_facts(TimeoutError()) == ErrorFacts()
    assert driver.error_facts(Odd()) == ErrorFacts()
    assert driver.error_facts(RuntimeError("pool is closing")) == ErrorFacts()


async def test_aiopg_reports_a_server_side_statement_timeout_as_cancellation(
    driver: Drv, cluster: LocalCluster, make_pool: Any
) -> None:
    """A documented aiopg quirk, kept as it is: QueryCanceled (57014, statement_timeout) reaches
    the caller as asyncio.CancelledError; the connection stays open and usable."""
    pool = await make_pool(cluster.primary, minsize=1, maxsize=1)
    connection = await driver.acquire(pool, None)
    await fetchval(connection, "SELECT set_config('statement_timeout', '50ms', false)")
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        with pytest.raises(asyncio.CancelledError):
            await fetchval(connection, "SELECT pg_sleep(1)")
    finally:
        loop.set_exception_handler(None)
    assert any(isinstance(c.get("exception"), psycopg2.Error) for c in reported)
    assert not driver.is_connection_closed(connection)
    await fetchval(connection, "SELECT set_config('statement_timeout', '0', false)")
    assert await fetchval(connection, "SELECT 1") == 1
    await driver.release(pool, connection)
