"""Fixtures for the hasql-aiopg tests: real local PostgreSQL clusters, the driver under test.

The driver is resolved by name through the installed ``hasql`` entry points, the name coming from
``HASQL_TEST_DRIVER`` ("aiopg" or "aiopg_sa", set by the nox session; "aiopg" when unset), so these
tests also prove that the plugin is installed and discoverable. Tests that only read and write share
one cluster per session (each tags its connections with its own ``application_name`` to count
them); tests that freeze, stop or promote a node get their own through ``hasql_cluster``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiopg_helpers import DRIVER_NAME, node_dsn

from hasql_core.driver import Driver
from hasql_core.testing.cluster import LocalCluster, Node
from hasql_core.testing.drivers import make_driver

_app_names = itertools.count()


@pytest.fixture(scope="session")
def cluster(hasql_pg_bindir: Path) -> Iterator[LocalCluster]:
    """A primary and one replica shared by the tests that leave the topology as they found it."""
    with LocalCluster(replicas=1, bindir=hasql_pg_bindir) as shared:
        yield shared


@pytest.fixture
def driver() -> Driver[Any, Any, Any]:
    """A fresh instance of the driver named by HASQL_TEST_DRIVER, made through its entry point."""
    return make_driver(DRIVER_NAME)


@pytest.fixture
def app_name() -> str:
    """A unique ``application_name``, to count exactly the test's own server connections."""
    return f"hasql_aiopg_{os.getpid()}_{next(_app_names)}"


@pytest.fixture
async def make_pool(
    driver: Driver[Any, Any, Any], app_name: str
) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Make (and open, unless ``open=False``) a driver pool for one node (reached through port
    ``via`` if given), its connections named ``app_name``; every pool made is terminated at the
    end of the test."""
    made: list[Any] = []

    async def make(node: Node, *, open: bool = True, via: int | None = None, **options: Any) -> Any:
        dsn = node_dsn(node, application_name=app_name)
        if via is not None:  # through the node's fault proxy, listening on port ``via``
            dsn = dsn.with_host("127.0.0.1", via)
        pool = driver.create_pool(dsn, options)
        made.append(pool)
        if open:
            await driver.open_pool(pool)
        return pool

    yield make
    for pool in made:
        await driver.terminate_pool(pool)
