"""The driver uses psycopg's async API only: no sync connection, cursor or pool, ever.

Two independent checks. At run time every constructor of psycopg's sync classes is wrapped with a
pass-through recorder (behaviour unchanged) while the driver's whole life cycle runs, on its own and
under a PoolManager, failures included; nothing may be recorded, while the async constructors, wrapped
the same way, must have been seen (so the recorders do work). Statically, the driver's source must not
name a sync class or function of psycopg.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import traceback
from typing import Any

import hasql_psycopg3.driver
import psycopg
import psycopg_pool
import pytest
from hasql_psycopg3.driver import PsycopgDriver
from psycopg3_helpers import DRIVER_NAME, node_dsn

from hasql_core import PoolManager
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import PROBE_QUERY

pytestmark = pytest.mark.timeout(120)

SYNC_CLASSES = [
    psycopg.Connection,
    psycopg.Cursor,
    psycopg.ServerCursor,
    psycopg.ClientCursor,
    psycopg.Pipeline,
    psycopg.Transaction,
    psycopg_pool.ConnectionPool,
    psycopg_pool.NullConnectionPool,
]
ASYNC_CLASSES = [psycopg.AsyncConnection, psycopg.AsyncCursor, psycopg_pool.AsyncConnectionPool]


@pytest.fixture
def constructed(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Record (class name -> creation stacks) for every sync and async class above."""
    seen: dict[str, list[str]] = {}

    def recording(cls: type[Any]) -> Any:
        original = cls.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            seen.setdefault(cls.__name__, []).append("".join(traceback.format_stack(limit=12)))
            original(self, *args, **kwargs)

        return __init__

    for cls in SYNC_CLASSES + ASYNC_CLASSES:
        monkeypatch.setattr(cls, "__init__", recording(cls))
    # The sync module-level entry points, in case they build objects without __init__.
    for name in ("connect",):
        original = getattr(psycopg, name)

        def entry(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            seen.setdefault(f"psycopg.{_name}", []).append("".join(traceback.format_stack()))
            return _original(*args, **kwargs)

        monkeypatch.setattr(psycopg, name, entry)
    return seen


def _sync_uses(seen: dict[str, list[str]]) -> dict[str, list[str]]:
    sync_names = {cls.__name__ for cls in SYNC_CLASSES} | {"psycopg.connect"}
    return {name: stacks for name, stacks in seen.items() if name in sync_names}


async def test_driver_life_cycle_uses_no_sync_api(
    cluster: LocalCluster, driver: PsycopgDriver, constructed: dict[str, list[str]]
) -> None:
    pool = driver.create_pool(node_dsn(cluster.primary), {"min_size": 2, "max_size": 3})
    await driver.open_pool(pool)
    conn = await driver.acquire(pool, 5.0)
    cur = await conn.execute("SELECT 1")
    assert await cur.fetchone() == (1,)
    await driver.release(pool, conn)
    held = [await driver.acquire(pool, 5.0) for _ in range(3)]
    with pytest.raises(asyncio.TimeoutError):  # the core cancels at its deadline
        await asyncio.wait_for(driver.acquire(pool, 0.1), 0.3)
    for item in held:
        await driver.release(pool, item)
    await driver.expire_idle(pool)
    driver.pool_stats(pool)
    out = await driver.acquire(pool, 5.0)
    await driver.terminate_pool(pool)
    assert driver.is_connection_closed(out)

    other = driver.create_pool(node_dsn(cluster.replicas[0]), {"min_size": 1})
    await driver.open_pool(other)
    await driver.close_pool(other)

    monitor = await driver.connect_monitor(node_dsn(cluster.replicas[0]), 5.0)
    await driver.probe(monitor, PROBE_QUERY)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(driver.probe(monitor, "SELECT pg_sleep(10)"), 0.2)
    await driver.close_monitor(monitor)

    assert _sync_uses(constructed) == {}
    assert {"AsyncConnection", "AsyncCursor", "AsyncConnectionPool"} <= set(constructed)


async def test_pool_manager_with_this_driver_uses_no_sync_api(
    cluster: LocalCluster, constructed: dict[str, list[str]]
) -> None:
    pm = PoolManager(
        cluster.dsn,
        driver=DRIVER_NAME,
        refresh_delay=0.2,
        pool_factory_kwargs={"min_size": 1, "max_size": 2},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=15)
        async with pm.acquire_master() as conn:
            await conn.execute("SELECT 1")
        async with pm.acquire_replica() as conn:
            await conn.execute("SELECT 1")
        await pm.close()
    finally:
        await pm.terminate()
    assert _sync_uses(constructed) == {}
    assert "AsyncConnection" in constructed


def test_driver_source_names_no_sync_api() -> None:
    tree = ast.parse(inspect.getsource(hasql_psycopg3.driver))
    sync_names = {cls.__name__ for cls in SYNC_CLASSES} | {"connect"}
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in sync_names:
            # psycopg.AsyncConnection.connect is the async one: allow `.connect` only on it.
            value = node.value
            if (
                node.attr == "connect"
                and isinstance(value, ast.Attribute)
                and value.attr == "AsyncConnection"
            ):
                continue
            used.add(ast.unparse(node))
        elif isinstance(node, ast.ImportFrom) and node.module in ("psycopg", "psycopg_pool"):
            used.update(alias.name for alias in node.names if alias.name in sync_names)
        elif isinstance(node, ast.Name) and node.id in sync_names:
            used.add(node.id)
    assert used == set()
