"""Helpers shared by the psycopg3 driver tests (a uniquely named module, imported by path)."""

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

#: The driver name under test; the nox session sets it, each plugin test run names one.
DRIVER_NAME = os.environ.get("HASQL_TEST_DRIVER", "psycopg3")


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


async def shut(driver: Any, pool: Any) -> None:
    """Test clean-up: close ``pool`` gracefully, or terminate it when a failed test holds one of
    its connections (a graceful close would wait for it forever)."""
    try:
        await asyncio.wait_for(driver.close_pool(pool), 5.0)
    except asyncio.TimeoutError:
        await driver.terminate_pool(pool)
