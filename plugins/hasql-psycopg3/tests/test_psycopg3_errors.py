"""classify_error and is_connection_closed on errors a real server raises."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import psycopg_pool
import pytest
from hasql_psycopg3.driver import PsycopgDriver, PsycopgPoolTimeout
from psycopg import errors as pg_errors
from psycopg3_helpers import backends, eventually, node_dsn, shut

from hasql_core.driver import ErrorKind
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


async def _error_of(connection: psycopg.AsyncConnection[Any], sql: str) -> BaseException:
    with pytest.raises(psycopg.Error) as info:
        await connection.execute(sql)
    return info.value


async def test_write_on_a_standby_is_read_only(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    pool = driver.create_pool(node_dsn(cluster.replicas[0]), {"min_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, 5.0)
        try:
            error = await _error_of(conn, "CREATE TABLE never_created (x int)")
            assert isinstance(error, pg_errors.ReadOnlySqlTransaction)
            assert driver.classify_error(error) is ErrorKind.READ_ONLY
            assert not driver.is_connection_closed(conn)
            await conn.rollback()
        finally:
            await driver.release(pool, conn)
    finally:
        await shut(driver, pool)


async def test_read_only_transaction_on_the_primary_is_read_only(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    conn = await driver.connect_monitor(node_dsn(cluster.primary), 5.0)
    try:
        await conn.execute("BEGIN READ ONLY")
        error = await _error_of(conn, "CREATE TABLE never_created (x int)")
        assert isinstance(error, pg_errors.ReadOnlySqlTransaction)
        assert driver.classify_error(error) is ErrorKind.READ_ONLY
        await conn.execute("ROLLBACK")
    finally:
        await driver.close_monitor(conn)


async def test_terminated_backend_is_connection_lost(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    pool = driver.create_pool(
        node_dsn(cluster.primary, application_name=app_name), {"min_size": 1, "max_size": 1}
    )
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, 5.0)
        try:
            await asyncio.to_thread(
                cluster.execute,
                cluster.primary,
                f"SELECT pg_terminate_backend({conn.info.backend_pid})",
            )

            async def gone() -> bool:
                return conn.info.backend_pid not in await backends(
                    cluster, cluster.primary, app_name
                )

            await eventually(gone, "the backend to exit")
            assert not driver.is_connection_closed(conn)  # psycopg has not read anything yet
            error = await _error_of(conn, "SELECT 1")
            assert isinstance(error, pg_errors.AdminShutdown)  # SQLSTATE 57P01
            assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST
            assert driver.is_connection_closed(conn)
            again = await _error_of(conn, "SELECT 1")  # "the connection is closed"
            assert driver.classify_error(again) is ErrorKind.CONNECTION_LOST
        finally:
            await driver.release(pool, conn)
    finally:
        await shut(driver, pool)


async def test_user_errors_are_other(cluster: LocalCluster, driver: PsycopgDriver) -> None:
    conn = await driver.connect_monitor(node_dsn(cluster.primary), 5.0)
    try:
        for sql in (
            "SELEC 1",  # syntax error 42601
            "SELECT 1/0",  # division by zero 22012
            "SELECT * FROM no_such_table",  # undefined table 42P01
            "SET statement_timeout = 1; SELECT pg_sleep(1)",  # query canceled 57014
        ):
            error = await _error_of(conn, sql)
            assert driver.classify_error(error) is ErrorKind.OTHER, (sql, error)
            assert not driver.is_connection_closed(conn)
            await conn.execute("RESET statement_timeout")
    finally:
        await driver.close_monitor(conn)


async def test_refused_connection_is_connection_lost(driver: PsycopgDriver) -> None:
    from hasql_core.dsn import parse_dsn

    with pytest.raises(psycopg.OperationalError) as info:
        await driver.connect_monitor(parse_dsn("postgresql://nobody@127.0.0.1:1/postgres"), 2.0)
    assert info.value.sqlstate is None
    assert driver.classify_error(info.value) is ErrorKind.CONNECTION_LOST


def test_classification_of_library_and_other_errors(driver: PsycopgDriver) -> None:
    # Real psycopg exception classes, as psycopg builds them for these SQLSTATEs.
    assert driver.classify_error(pg_errors.lookup("57P03")("starting up")) is ErrorKind.UNAVAILABLE
    assert driver.classify_error(pg_errors.lookup("57P02")("crash")) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(pg_errors.lookup("08006")("failure")) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(pg_errors.lookup("25006")("ro")) is ErrorKind.READ_ONLY
    assert driver.classify_error(pg_errors.lookup("53300")("too many")) is ErrorKind.OTHER
    assert driver.classify_error(ConnectionResetError()) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(psycopg_pool.PoolTimeout()) is ErrorKind.OTHER
    assert driver.classify_error(psycopg_pool.PoolClosed()) is ErrorKind.OTHER
    assert driver.classify_error(PsycopgPoolTimeout()) is ErrorKind.OTHER
    assert driver.classify_error(asyncio.TimeoutError()) is ErrorKind.OTHER
    assert driver.classify_error(asyncio.CancelledError()) is ErrorKind.OTHER
    assert driver.classify_error(ValueError()) is ErrorKind.OTHER
    # An application error raised from a lost connection is about the host too.
    lost = pg_errors.lookup("57P01")("terminating connection")
    wrapped = RuntimeError("request failed")
    wrapped.__cause__ = lost
    assert driver.classify_error(wrapped) is ErrorKind.CONNECTION_LOST
