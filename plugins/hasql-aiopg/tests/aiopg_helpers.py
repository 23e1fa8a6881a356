"""Helpers shared by the hasql-aiopg tests (a uniquely named module, imported by path)."""

from __future__ import annotations

import os
from typing import Any

from hasql_core.testing.drivers import client_backends as backends
from hasql_core.testing.drivers import eventually, node_dsn

__all__ = ["DRIVER_NAME", "IS_SA", "backends", "eventually", "fetchval", "node_dsn", "raw_of"]

#: The driver under test ("aiopg" or "aiopg_sa"); the nox session sets it.
DRIVER_NAME = os.environ.get("HASQL_TEST_DRIVER", "aiopg")
IS_SA = DRIVER_NAME in ("aiopg_sa", "aiopg.sa")


def raw_of(connection: Any) -> Any:
    """The aiopg connection under a handed-out object (itself for the aiopg driver)."""
    return connection.connection if IS_SA else connection


async def fetchval(connection: Any, sql: str, *, timeout: float | None = None) -> Any:
    """Run ``sql`` on a handed-out connection (either driver's) and return the first value."""
    cursor = await raw_of(connection).cursor()
    try:
        await cursor.execute(sql, timeout=timeout)
        row = await cursor.fetchone()
    finally:
        cursor.close()
    return None if row is None else row[0]


class AiopgSql:
    """The conformance suite's SQL runner for both drivers.

    aiopg connections are always in autocommit mode (psycopg2's asynchronous connections), so a
    write is committed when it returns. For ``aiopg_sa`` the SQLAlchemy connection's own
    ``scalar``/``execute`` are used, as an application would.
    """

    async def fetchval(self, connection: Any, sql: str) -> Any:
        if IS_SA:
            return await connection.scalar(sql)
        return await fetchval(connection, sql)

    async def execute(self, connection: Any, sql: str) -> None:
        if IS_SA:
            await connection.execute(sql)
            return
        cursor = await connection.cursor()
        try:
            await cursor.execute(sql)
        finally:
            cursor.close()
