"""hasql-core's driver suite (the driver contract, method by method), run for the driver named by
HASQL_TEST_DRIVER."""

from __future__ import annotations

from typing import Any

import pytest
from aiopg_helpers import DRIVER_NAME, IS_SA, AiopgSql, raw_of

from hasql_core.testing.driver_suite import *  # noqa: F403 - the suite's tests and fixtures


class AiopgAdapter(AiopgSql):
    """The suite's adapter: aiopg's pool option names; transactions by statement (psycopg2's
    asynchronous connections are always in autocommit mode, so BEGIN opens one)."""

    driver_name = DRIVER_NAME

    def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
        return {"minsize": min_size, "maxsize": max_size}

    async def begin(self, connection: Any, *, read_only: bool = False) -> None:
        cursor = await raw_of(connection).cursor()
        try:
            await cursor.execute("BEGIN READ ONLY" if read_only else "BEGIN")
        finally:
            cursor.close()


@pytest.fixture
def driver_suite_adapter() -> AiopgAdapter:
    return AiopgAdapter()


__all__ = [
    "IS_SA",
    "driver_suite_adapter",
    "test_cancelling_the_caller_of_a_release_on_frozen_primary_leaves_nothing_checked_out",
    "test_server_errors_of_a_statement_carry_their_sqlstate_and_are_other",
]


@pytest.mark.asyncio  # type: ignore[no-redef]
@pytest.mark.timeout(120)
@pytest.mark.hasql_cluster(replicas=0)
async def test_cancelling_the_caller_of_a_release_on_frozen_primary_leaves_nothing_checked_out(
    hasql_cluster: Any, driver_suite_adapter: AiopgAdapter, suite_app_name: str
) -> None:
    """Replaces the suite's scenario of the same name, whose premise does not hold for aiopg: the
    suite cancels a release that waits on the frozen primary to roll back an open transaction, but
    aiopg never talks to the server on release (a connection inside a transaction is closed, not
    rolled back), so there is no release in flight to cancel. What the scenario protects is checked
    in its stronger form: the release returns at once on the frozen primary, the connection is
    closed, and nothing stays checked out."""
    import asyncio

    from hasql_core.manager import PoolManager

    cluster = hasql_cluster
    pm = PoolManager(
        cluster.primary.dsn + f"?application_name={suite_app_name}",
        driver=driver_suite_adapter.driver_name,
        refresh_delay=30.0,
        refresh_timeout=1.0,
        acquire_timeout=2.0,
        release_timeout=30.0,
        pool_factory_kwargs=driver_suite_adapter.pool_options(1, 2),
    )
    loop = asyncio.get_running_loop()
    try:
        await pm.ready(masters_count=1, replicas_count=0, timeout=10)
        conn = await pm.acquire_master()
        await driver_suite_adapter.begin(conn)
        assert await driver_suite_adapter.fetchval(conn, "SELECT 1") == 1
        await asyncio.to_thread(cluster.freeze, cluster.primary)
        started = loop.time()
        await asyncio.wait_for(pm.release(conn), 1.0)
        assert loop.time() - started < 0.5
        assert pm.driver.is_connection_closed(conn)
        assert sum(pm.driver.pool_stats(pool).in_use for pool in pm.pools) == 0
    finally:
        await asyncio.to_thread(cluster.thaw, cluster.primary)
        await asyncio.wait_for(pm.close(), 12)


@pytest.mark.asyncio  # type: ignore[no-redef]
@pytest.mark.timeout(120)
async def test_server_errors_of_a_statement_carry_their_sqlstate_and_are_other(
    suite_driver: Any, suite_cluster: Any, driver_suite_adapter: AiopgAdapter, suite_app_name: str
) -> None:
    """Replaces the suite's scenario of the same name for one aiopg quirk: the server's
    ``statement_timeout`` (57014) reaches the caller as ``asyncio.CancelledError`` (aiopg raises
    it while handling psycopg2's ``QueryCanceledError``), which the suite's helper does not catch.
    Same cases, same checks; for 57014 the CancelledError is checked, and its facts are 57014."""
    import asyncio

    from aiopg_helpers import node_dsn

    from hasql_core.driver import ErrorFacts, ErrorKind

    driver, adapter = suite_driver, driver_suite_adapter
    cases = [
        ("SELEC 1", "42601"),
        ("SELECT 1 / 0", "22012"),
        (
            "CREATE TEMP TABLE hasql_u (id int PRIMARY KEY); "
            "INSERT INTO hasql_u VALUES (1); INSERT INTO hasql_u VALUES (1)",
            "23505",
        ),
        ("SET statement_timeout = 50; SELECT pg_sleep(5)", "57014"),
    ]
    pool = driver.create_pool(
        node_dsn(suite_cluster.primary, application_name=suite_app_name),
        adapter.pool_options(1, 1),
    )
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _, context: None)  # aiopg reports 57014 there too
    try:
        await driver.open_pool(pool)
        for sql, sqlstate in cases:
            conn = await driver.acquire(pool, 5.0)
            try:
                try:
                    await adapter.execute(conn, sql)
                except BaseException as caught:
                    error: BaseException = caught
                else:
                    pytest.fail(f"{sql!r} raised nothing")
                if sqlstate == "57014":
                    assert isinstance(error, asyncio.CancelledError)
                assert driver.error_facts(error) == ErrorFacts(sqlstate=sqlstate), (sql, error)
                assert driver.classify_error(error) is ErrorKind.OTHER
                assert not driver.is_connection_closed(conn)
            finally:
                await driver.release(pool, conn)
    finally:
        loop.set_exception_handler(None)
        await driver.terminate_pool(pool)
