"""Helpers shared by the hasql-asyncpg tests (imported by name: this folder is on sys.path)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote, urlencode

import asyncpg
import pytest

from hasql_core.dsn import Dsn, split_dsn

#: The driver the tests exercise: set by the nox session, "asyncpg" when unset.
DRIVER_NAME = os.environ.get("HASQL_TEST_DRIVER", "asyncpg")

T = TypeVar("T")


def node_dsn(node: Any, **params: str) -> Dsn:
    """The single-host Dsn of a cluster node, with extra libpq parameters added."""
    url: str = node.dsn
    if params:
        url += ("&" if "?" in url else "?") + urlencode(params, quote_via=quote)
    (dsn,) = split_dsn(url)
    return dsn


async def admin_connect(node: Any) -> asyncpg.Connection:
    """A plain asyncpg connection used by the test itself to look at the server."""
    dsn = node_dsn(node, application_name="hasql-test-admin")
    return await asyncpg.connect(
        host=dsn.host,
        port=dsn.port,
        user=dsn.user,
        password=dsn.password,
        database=dsn.database,
        server_settings={"application_name": "hasql-test-admin"},
    )


async def backends(admin: asyncpg.Connection, app_name: str) -> list[int]:
    """PIDs of the client backends whose application_name is ``app_name``, sorted."""
    rows = await admin.fetch(
        "SELECT pid FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid", app_name
    )
    return [row["pid"] for row in rows]


async def eventually(
    probe: Callable[[], Awaitable[T]],
    condition: Callable[[T], bool],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
) -> T:
    """Poll ``probe`` until ``condition`` holds for its result; fail with the last value after
    ``timeout`` seconds. For facts that settle asynchronously (a backend exiting, a replay)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if condition(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(interval)
