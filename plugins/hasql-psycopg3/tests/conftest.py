"""Fixtures for the psycopg3 driver tests: a real local PostgreSQL cluster, the driver under test.

The driver is resolved by name through the installed ``hasql`` entry points, the name coming from
``HASQL_TEST_DRIVER`` (``psycopg3`` unless set), so these tests also prove the plugin is installed
and discoverable. Servers come from :class:`hasql_core.testing.cluster.LocalCluster`.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hasql_psycopg3.driver import PsycopgDriver
from psycopg3_helpers import DRIVER_NAME

from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import make_driver

_app_names = itertools.count()


@pytest.fixture(scope="session")
def cluster(hasql_pg_bindir: Path) -> Iterator[LocalCluster]:
    """A primary and one replica shared by the tests that leave the topology as they found it.

    Tests that promote, freeze or stop a node use hasql-core's per-test ``hasql_cluster`` instead.
    """
    with LocalCluster(replicas=1, bindir=hasql_pg_bindir) as shared:
        yield shared


@pytest.fixture
def driver() -> PsycopgDriver:
    made = make_driver(DRIVER_NAME)
    assert isinstance(made, PsycopgDriver)
    return made


@pytest.fixture
def app_name() -> str:
    """A unique ``application_name``, to count exactly the test's own server connections."""
    return f"hasql_test_{os.getpid()}_{next(_app_names)}"
