"""Re-pointing a replica to a promoted node: the fast path, and a replica ahead of the fork."""

from __future__ import annotations

import pytest

from hasql_core.testing.cluster import LocalCluster, Node

from .conftest import ClusterFactory
from .helpers import wait_for

pytestmark = pytest.mark.cluster


def _receiver(cluster: LocalCluster, node: Node) -> list[tuple[str, ...]]:
    return cluster.execute(node, "SELECT status, sender_port FROM pg_stat_wal_receiver")


def _stop_receiving(cluster: LocalCluster, node: Node) -> None:
    """Stop ``node``'s WAL receiver for good (an empty primary_conninfo); wait until it is gone."""
    cluster.execute(node, "ALTER SYSTEM SET primary_conninfo = ''")
    cluster.execute(node, "SELECT pg_reload_conf()")
    wait_for(lambda: _receiver(cluster, node) == [], f"{node.name}'s WAL receiver to stop")


def test_repoint_follows_new_timeline_without_restart(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2)
    replica = cluster.nodes[2]
    cluster.execute(0, "CREATE TABLE t (x text); INSERT INTO t VALUES ('before')")
    cluster.wait_replayed()
    cluster.kill(0)
    cluster.promote(1)
    pid = replica.pid

    cluster.repoint(replica, 1)
    assert replica.pid == pid, "a replica that can follow keeps running (no rewind, no restart)"
    assert replica.upstream is cluster.nodes[1]
    assert _receiver(cluster, replica) == [("streaming", str(cluster.nodes[1].port))]
    cluster.execute(1, "INSERT INTO t VALUES ('after')")
    cluster.wait_replayed()
    assert cluster.execute(replica, "SELECT x FROM t ORDER BY x") == [("after",), ("before",)]


@pytest.mark.parametrize("fault", ["freeze", "kill"])
def test_repoint_rewinds_replica_ahead_of_new_primary(
    make_cluster: ClusterFactory, fault: str
) -> None:
    cluster = make_cluster(2)
    old, new, replica = cluster.nodes
    cluster.execute(old, "CREATE TABLE t (x text); INSERT INTO t VALUES ('common')")
    cluster.wait_replayed()
    # node1 gets no more WAL; node2 does, so node1's new timeline forks off before node2's end.
    _stop_receiving(cluster, new)
    cluster.execute(old, "INSERT INTO t VALUES ('node2 only')")
    lsn = cluster.execute(old, "SELECT pg_current_wal_lsn()")[0][0]
    replayed = f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn"
    wait_for(lambda: cluster.execute(replica, replayed) == [("t",)], "node2 to replay the write")
    if fault == "freeze":
        cluster.freeze(old)
    else:
        cluster.kill(old)
    cluster.promote(new)
    cluster.execute(new, "INSERT INTO t VALUES ('after')")
    pid = replica.pid

    cluster.repoint(replica, new)
    assert replica.pid != pid, "a diverged replica is rewound and restarted"
    assert replica.upstream is new
    assert cluster.execute(replica, "SELECT pg_is_in_recovery()") == [("t",)]
    assert _receiver(cluster, replica) == [("streaming", str(new.port))]
    cluster.execute(new, "INSERT INTO t VALUES ('later')")
    cluster.wait_replayed()
    assert cluster.execute(replica, "SELECT x FROM t ORDER BY x") == [
        ("after",),
        ("common",),
        ("later",),
    ]


def test_repoint_rewinds_replica_that_received_past_the_fork(make_cluster: ClusterFactory) -> None:
    # WAL received but not replayed: pg_rewind finds nothing to rewind, yet that WAL would be
    # replayed at start; repoint must drop it.
    cluster = make_cluster(2)
    old, new, replica = cluster.nodes
    cluster.execute(old, "CREATE TABLE t (x text); INSERT INTO t VALUES ('common')")
    cluster.wait_replayed()
    cluster.pause_replay(replica)
    _stop_receiving(cluster, new)
    cluster.execute(old, "INSERT INTO t VALUES ('node2 only')")
    lsn = cluster.execute(old, "SELECT pg_current_wal_lsn()")[0][0]
    received = f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"
    wait_for(lambda: cluster.execute(replica, received) == [("t",)], "node2 to receive the write")
    cluster.kill(old)
    cluster.promote(new)
    cluster.execute(new, "INSERT INTO t VALUES ('after')")
    pid = replica.pid

    cluster.repoint(replica, new)
    assert replica.pid != pid
    assert _receiver(cluster, replica) == [("streaming", str(new.port))]
    cluster.wait_replayed()
    assert cluster.execute(replica, "SELECT x FROM t ORDER BY x") == [("after",), ("common",)]
