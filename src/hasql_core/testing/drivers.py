"""Helpers for the tests of a driver plugin: resolve a driver the way a PoolManager does, and run
the core's probe on a monitor connection.

These are the public way for plugin tests to reach what the core does internally; plugin code and
plugin tests import nothing from a ``hasql_core._*`` module.
"""

from __future__ import annotations

from typing import Any

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

__all__ = [
    "PROBE_QUERY",
    "ProbeResult",
    "driver_class",
    "drivers_of_plugin",
    "installed_drivers",
    "make_driver",
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
