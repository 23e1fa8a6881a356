"""Fixtures of the hasql-sqlalchemy tests: real local PostgreSQL clusters, both dialects.

The driver is resolved by name through the installed ``hasql`` entry points (see
:mod:`sqlalchemy_helpers`), so these tests also prove the plugin is installed and discoverable.
Tests that read and write share one cluster (``shared_cluster``); tests that freeze, stop or
promote a node get their own through hasql-core's ``hasql_cluster`` fixture.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy_helpers import DIALECTS, DRIVER_NAME, PsycopgByDefaultDriver

from hasql_core.driver import Driver
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import make_driver

_names = itertools.count(1)


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    """The SQLAlchemy dialect under test: every test using it runs once per dialect."""
    return str(request.param)


@pytest.fixture
def driver(dialect: str) -> Driver[Any, Any, Any]:
    """A fresh driver whose plain ``postgresql://`` DSNs use ``dialect``."""
    if dialect == "asyncpg":
        return make_driver(DRIVER_NAME)
    return PsycopgByDefaultDriver()


@pytest.fixture(scope="session")
def shared_cluster(hasql_pg_bindir: Path) -> Iterator[LocalCluster]:
    """A primary and one streaming replica shared by tests that leave the topology as it was."""
    with LocalCluster(replicas=1, bindir=hasql_pg_bindir) as cluster:
        yield cluster


@pytest.fixture
def app_name(request: pytest.FixtureRequest) -> str:
    """An ``application_name`` unique to the test, to find its sessions in pg_stat_activity."""
    return f"t{next(_names)}-{os.getpid()}-{request.node.name}"[:63]
