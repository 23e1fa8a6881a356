"""Freezing a node (SIGSTOP) and pausing WAL replay: what a client sees."""

from __future__ import annotations

import os
import subprocess

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing import _procs

from .conftest import ClusterFactory
from .helpers import state_of, wait_for

pytestmark = pytest.mark.cluster


def test_freeze_blocks_client_and_thaw_releases(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(0)
    node = cluster.primary
    assert node.pid is not None
    cluster.freeze(node)
    assert state_of(node) == "frozen"
    # Zombies (backends that exited and that the frozen postmaster cannot reap) are left out.
    processes = [pid for pid in [node.pid, *_procs.descendants(node.pid)] if _procs.pid_alive(pid)]
    assert len(processes) > 3
    assert all(_procs.process_state(pid) in ("T", "t") for pid in processes)

    client = subprocess.Popen(
        [str(cluster.bindir / "psql"), "-X", "-A", "-t", "-d", node.dsn, "-c", "SELECT 42"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGSSLMODE": "disable", "PGCONNECT_TIMEOUT": "30"},
    )
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            client.communicate(timeout=1.0)  # must still hang: the server is frozen
        cluster.thaw(node)
        assert state_of(node) == "running"
        out, err = client.communicate(timeout=15)
    finally:
        client.kill()
        client.wait()
    assert client.returncode == 0, err
    assert out.strip() == "42"
    assert all(_procs.process_state(pid) not in ("T", "t") for pid in processes)


def test_pause_replay_shows_lag_then_catches_up(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1)
    replica = cluster.nodes[1]
    cluster.execute(0, "CREATE TABLE t (x int)")
    cluster.wait_replayed()

    cluster.pause_replay(replica)
    cluster.execute(0, "INSERT INTO t VALUES (1)")
    lsn = cluster.execute(0, "SELECT pg_current_wal_lsn()")[0][0]
    # The WAL arrives (it is received and flushed) but is not applied.
    received = f"SELECT pg_last_wal_receive_lsn() >= '{lsn}'::pg_lsn"
    wait_for(lambda: cluster.execute(replica, received) == [("t",)], "the WAL to arrive")
    assert cluster.execute(replica, f"SELECT pg_last_wal_replay_lsn() < '{lsn}'::pg_lsn") == [
        ("t",)
    ]
    assert cluster.execute(replica, "SELECT count(*) FROM t") == [("0",)]
    with pytest.raises(ClusterError, match="node1 did not replay"):
        cluster.wait_replayed(timeout=0.3)

    cluster.resume_replay(replica)
    cluster.wait_replayed()
    assert cluster.execute(replica, "SELECT count(*) FROM t") == [("1",)]
