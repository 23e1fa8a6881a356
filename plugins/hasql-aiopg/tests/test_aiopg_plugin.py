"""The plugin is found through the ``hasql`` entry points under its three names."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
from aiopg_helpers import DRIVER_NAME, IS_SA
from hasql_aiopg import AiopgDriver, AiopgSaAliasDriver, AiopgSaDriver

from hasql_core.errors import PluginError
from hasql_core.testing.drivers import installed_drivers, make_driver

HAS_SQLALCHEMY = importlib.util.find_spec("sqlalchemy") is not None


def test_entry_points_name_every_driver() -> None:
    eps = importlib.metadata.entry_points(group="hasql")
    ours = {ep.name: ep.value for ep in eps if ep.dist and ep.dist.name == "hasql-aiopg"}
    assert ours == {
        "aiopg": "hasql_aiopg.plugin",
        "aiopg_sa": "hasql_aiopg.plugin",
        "aiopg.sa": "hasql_aiopg.plugin",
    }
    names = installed_drivers()
    assert {"aiopg", "aiopg_sa", "aiopg.sa"} <= names.keys()
    assert names["aiopg"].startswith("hasql-aiopg ")


def test_the_driver_under_test_resolves_by_name() -> None:
    expected = AiopgSaDriver if IS_SA else AiopgDriver
    assert type(make_driver(DRIVER_NAME)) is expected
    assert type(make_driver("aiopg")) is AiopgDriver


@pytest.mark.skipif(not HAS_SQLALCHEMY, reason="needs SQLAlchemy 1.x (the aiopg_sa environment)")
def test_aiopg_dot_sa_is_an_alias() -> None:
    driver = make_driver("aiopg.sa")
    assert isinstance(driver, AiopgSaAliasDriver) and isinstance(driver, AiopgSaDriver)
    assert driver.name == "aiopg.sa"


@pytest.mark.skipif(HAS_SQLALCHEMY, reason="needs an environment without SQLAlchemy")
def test_aiopg_sa_without_sqlalchemy_says_what_to_install() -> None:
    with pytest.raises(PluginError, match=r"hasql-aiopg\[sa\]"):
        make_driver("aiopg_sa")
    make_driver("aiopg")  # the aiopg driver does not need it
