"""Fixtures for the hasql-asyncpg tests.

The driver under test is named by the environment variable ``HASQL_TEST_DRIVER`` ("asyncpg" or
"asyncpgsa", set by the nox session; "asyncpg" when unset) and made through the ``hasql`` entry
points, as a PoolManager would. The library-specific tests here share one real local cluster per
session (each one tags its connections with its own ``application_name`` to count them). The
driver-level scenarios every driver must pass (hasql-core's driver suite) and the manager-level
ones (its conformance suite) run from test_asyncpg_driver_suite.py and test_conformance.py with
clusters of their own.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import DRIVER_NAME, admin_connect

from hasql_core.driver import Driver
from hasql_core.testing.drivers import make_driver

_names = itertools.count(1)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "asyncpgsa_only: runs only when HASQL_TEST_DRIVER is asyncpgsa"
    )


#: Driver-suite tests the asyncpg driver does not pass yet, and why. Strict: a fix shows up as a
#: failure (XPASS) here, and the entry is then removed.
KNOWN_GAPS: dict[str, str] = {}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=f"needs HASQL_TEST_DRIVER=asyncpgsa (it is {DRIVER_NAME})")
    for item in items:
        if item.get_closest_marker("asyncpgsa_only") and DRIVER_NAME != "asyncpgsa":
            item.add_marker(skip)
        gap = KNOWN_GAPS.get(item.name)
        if gap is not None and item.path.name == "test_asyncpg_driver_suite.py":
            item.add_marker(pytest.mark.xfail(reason=gap, strict=True))


@pytest.fixture
def driver() -> Driver[Any, Any, Any]:
    """A fresh instance of the driver named by HASQL_TEST_DRIVER, resolved by entry point."""
    return make_driver(DRIVER_NAME)


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    """An application_name unique to this test, to find its connections in pg_stat_activity."""
    return f"t{next(_names)}-{os.getpid()}-{request.node.name}"[:63]


@pytest.fixture(scope="session")
def shared_cluster(hasql_pg_bindir: Any) -> Iterator[Any]:
    """One primary and one streaming replica shared by the tests that do not change the topology."""
    from hasql_core.testing.cluster import LocalCluster

    with LocalCluster(replicas=1, bindir=hasql_pg_bindir) as cluster:
        yield cluster


@pytest.fixture
async def admin(shared_cluster: Any) -> AsyncIterator[asyncpg.Connection]:
    """An admin connection to the shared cluster's primary."""
    connection = await admin_connect(shared_cluster.primary)
    try:
        yield connection
    finally:
        await connection.close()
