"""Discovery of the psycopg3 plugin through the ``hasql`` entry points and its hook."""

from __future__ import annotations

import importlib.metadata

import pytest
from hasql_psycopg3 import plugin
from hasql_psycopg3.driver import PsycopgAliasDriver, PsycopgDriver

from hasql_core.driver import Driver
from hasql_core.testing.drivers import (
    driver_class,
    drivers_of_plugin,
    installed_drivers,
    make_driver,
)


def test_entry_points_name_the_plugin_module() -> None:
    eps = {
        ep.name: ep.value
        for ep in importlib.metadata.entry_points(group="hasql")
        if ep.dist is not None and ep.dist.metadata["Name"] == "hasql-psycopg3"
    }
    assert eps == {"psycopg3": "hasql_psycopg3.plugin", "psycopg": "hasql_psycopg3.plugin"}


@pytest.mark.parametrize(
    ("name", "cls"), [("psycopg3", PsycopgDriver), ("psycopg", PsycopgAliasDriver)]
)
def test_both_names_resolve_to_working_drivers(name: str, cls: type[Driver]) -> None:  # type: ignore[type-arg]
    assert driver_class(name) is cls
    driver = make_driver(name)
    assert isinstance(driver, PsycopgDriver)
    assert driver.name == name
    assert installed_drivers()[name].startswith("hasql-psycopg3 ")


def test_hook_fits_the_hookspecs() -> None:
    provided = drivers_of_plugin(plugin, "hasql-psycopg3")
    assert provided == [PsycopgDriver, PsycopgAliasDriver]
    assert all(issubclass(cls, Driver) for cls in provided)
