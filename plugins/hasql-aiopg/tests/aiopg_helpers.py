"""Helpers shared by the hasql-aiopg tests (a uniquely named module, imported by path)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import pytest

from hasql_core.dsn import Dsn, parse_dsn
from hasql_core.testing.cluster import LocalCluster, Node

#: The driver under test ("aiopg" or "aiopg_sa"); the nox session sets it.
DRIVER_NAME = os.environ.get("HASQL_TEST_DRIVER", "aiopg")
IS_SA = DRIVER_NAME in ("aiopg_sa", "aiopg.sa")


def node_dsn(node: Node, **params: str) -> Dsn:
    """A single-host Dsn for ``node`` with extra libpq parameters."""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    return parse_dsn(node.dsn + ("?" + query if query else ""))


async def backends(cluster: LocalCluster, node: Node, app_name: str) -> list[int]:
    """Server pids of the client connections named ``app_name`` on ``node`` (asked over psql)."""
    rows = await asyncio.to_thread(
        cluster.execute,
        node,
        "SELECT pid FROM pg_stat_activity "
        f"WHERE backend_type = 'client backend' AND application_name = '{app_name}' ORDER BY pid",
    )
    return [int(row[0]) for row in rows]


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """Await ``check()`` until it returns something truthy; fail naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


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
