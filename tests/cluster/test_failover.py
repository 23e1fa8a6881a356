"""Promotion, re-pointing, rejoining with pg_rewind, kill and restart."""

from __future__ import annotations

import pytest

from hasql_core import Role
from hasql_core.testing import _procs

from .conftest import ClusterFactory
from .helpers import state_of, wait_for

pytestmark = pytest.mark.cluster


def test_promote_and_repoint(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2)
    cluster.execute(0, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
    cluster.wait_replayed()

    cluster.kill(0)
    cluster.promote(1)
    assert cluster.execute(1, "SELECT pg_is_in_recovery()") == [("f",)]
    assert cluster.primary is cluster.nodes[1]
    assert cluster.nodes[1].role is Role.PRIMARY
    assert cluster.nodes[1].upstream is None
    assert cluster.replicas == [cluster.nodes[2]]

    cluster.repoint(2, 1)
    assert cluster.nodes[2].upstream is cluster.nodes[1]
    streaming = cluster.execute(
        1, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
    )
    assert streaming == [("node2",)]
    cluster.execute(1, "INSERT INTO t VALUES (2)")
    cluster.wait_replayed()
    assert cluster.execute(2, "SELECT x FROM t ORDER BY x") == [("1",), ("2",)]


def test_rejoin_after_divergence(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    cluster.execute(0, "CREATE TABLE t (x text); INSERT INTO t VALUES ('common')")
    cluster.wait_replayed()

    cluster.promote(1)
    # The old primary is still up and takes a write the new one never sees: split brain.
    cluster.execute(0, "INSERT INTO t VALUES ('lost')")
    cluster.execute(1, "INSERT INTO t VALUES ('kept')")
    assert cluster.nodes[0].role is Role.PRIMARY

    cluster.rejoin(0, 1)
    old = cluster.nodes[0]
    assert old.role is Role.STANDBY
    assert old.upstream is cluster.nodes[1]
    assert cluster.execute(old, "SELECT pg_is_in_recovery()") == [("t",)]
    receiver = cluster.execute(old, "SELECT status, sender_port FROM pg_stat_wal_receiver")
    assert receiver == [("streaming", str(cluster.nodes[1].port))]
    streaming = cluster.execute(
        1, "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming'"
    )
    assert streaming == [("node0",)]

    cluster.execute(1, "INSERT INTO t VALUES ('after')")
    cluster.wait_replayed()
    assert cluster.execute(old, "SELECT x FROM t ORDER BY x") == [
        ("after",),
        ("common",),
        ("kept",),
    ]


def test_kill_then_start_node(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    primary = cluster.primary
    pid = primary.pid
    assert pid is not None
    children = _procs.descendants(pid)
    assert children, "a running postmaster has child processes"

    cluster.kill(primary)
    assert state_of(primary) == "stopped"
    assert primary.pid is None
    assert not _procs.pid_alive(pid)
    wait_for(lambda: not any(_procs.pid_alive(c) for c in children), "children to exit")

    cluster.start_node(primary)
    assert state_of(primary) == "running"
    assert primary.pid != pid
    assert cluster.execute(primary, "SELECT 1") == [("1",)]
    cluster.wait_streaming(1)
    cluster.execute(primary, "CREATE TABLE after_crash (x int)")
    cluster.wait_replayed()


def test_stop_modes_and_restart_replica(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    replica = cluster.nodes[1]
    cluster.stop(replica, "immediate")
    assert state_of(replica) == "stopped"
    cluster.start_node(replica)
    cluster.wait_streaming(replica)
    cluster.stop(replica)
    assert state_of(replica) == "stopped"
    cluster.execute(0, "CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
    cluster.start_node(replica)
    cluster.wait_ready(replica)
    cluster.wait_replayed()
    assert cluster.execute(replica, "SELECT x FROM t") == [("7",)]


def test_kill_frozen_node_then_restart(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(0)
    cluster.freeze(0)
    cluster.kill(0)
    assert state_of(cluster.nodes[0]) == "stopped"
    cluster.start_node(0)
    assert cluster.execute(0, "SELECT 1") == [("1",)]
