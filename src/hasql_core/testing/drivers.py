"""Helpers for the tests of a driver plugin: resolve a driver the way a PoolManager does, and run
the core's probe on a monitor connection.

These are the public way for plugin tests to reach what the core does internally; plugin code and
plugin tests import nothing from a ``hasql_core._*`` module.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from .._plugins import (
    DRIVERS,
    available_names,
    make_driver,
    new_plugin_manager,
    register_plugin,
    resolve,
)
from .._probe import PROBE_QUERY, ProbeResult, parse_probe_row
from ..driver import Driver
from ..dsn import Dsn, parse_dsn

if TYPE_CHECKING:
    from .cluster import LocalCluster, Node

__all__ = [
    "PROBE_QUERY",
    "ProbeResult",
    "client_backends",
    "driver_class",
    "drivers_of_plugin",
    "eventually",
    "installed_drivers",
    "make_driver",
    "node_dsn",
    "parse_probe_row",
    "probe_once",
]


def driver_class(name: str) -> type[Driver[Any, Any, Any]]:
    """The driver class registered under ``name`` in the ``hasql`` entry-point group, loaded the
    way ``PoolManager(driver=name)`` loads it (errors included)."""
    return resolve(DRIVERS, name)


def installed_drivers() -> dict[str, str]:
    """Every installed driver name, mapped to the distribution (name and version) providing it."""
    return available_names(DRIVERS)


def drivers_of_plugin(plugin: object, label: str = "the plugin under test") -> list[type[Any]]:
    """Register ``plugin`` (a module or object with ``@hookimpl`` functions) in a fresh plugin
    manager, checking it against the hookspecs as the core does, and return the driver classes its
    ``hasql_drivers`` hook provides. ``label`` names it in error messages."""
    manager = new_plugin_manager()
    register_plugin(manager, plugin, label)
    return [cls for result in manager.hook.hasql_drivers() for cls in result]


async def probe_once(driver: Driver[Any, Any, Any], connection: Any) -> ProbeResult:
    """Run the core's probe query (:data:`PROBE_QUERY`) on a monitor connection of ``driver`` and
    parse its row as the monitor does (raises ``ValueError`` for a row of the wrong shape)."""
    return parse_probe_row(await driver.probe(connection, PROBE_QUERY))


# make_driver is re-exported as is: a name, a Driver subclass or an instance -> a driver instance.
make_driver = make_driver


def node_dsn(node: Node, **params: str) -> Dsn:
    """The single-host Dsn of a test-cluster ``node``, with extra libpq parameters."""
    query = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    return parse_dsn(node.dsn + ("?" + query if query else ""))


async def client_backends(cluster: LocalCluster, node: Node, app_name: str) -> list[int]:
    """Server pids of the client sessions named ``app_name`` on ``node``, in order (asked over
    psql as the server's superuser, outside the driver under test)."""
    rows = await asyncio.to_thread(
        cluster.execute,
        node,
        "SELECT pid FROM pg_stat_activity "
        f"WHERE backend_type = 'client backend' AND application_name = '{app_name}' ORDER BY pid",
    )
    return [int(row[0]) for row in rows]


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 10.0) -> Any:
    """Await ``check()`` until it returns something truthy and return that; fail the test naming
    ``what`` after ``timeout`` seconds. Polls fast at first, then every 0.1 s."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)
