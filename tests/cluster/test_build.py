"""Building a cluster: streaming replicas, DSNs, authentication, settings."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hasql_core import Role
from hasql_core.errors import ClusterError

from .conftest import ClusterFactory
from .helpers import psql_tcp

pytestmark = pytest.mark.cluster


def test_build_streams_and_replicates(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2)
    names = [node.name for node in cluster.nodes]
    assert names == ["node0", "node1", "node2"]
    assert [node.role for node in cluster.nodes] == [Role.PRIMARY, Role.STANDBY, Role.STANDBY]
    assert all(node.state == "running" and node.pid for node in cluster.nodes)
    assert cluster.primary is cluster.nodes[0]
    assert cluster.replicas == cluster.nodes[1:]

    streaming = cluster.execute(
        cluster.primary,
        "SELECT application_name FROM pg_stat_replication WHERE state = 'streaming' ORDER BY 1",
    )
    assert streaming == [("node1",), ("node2",)]
    for replica in cluster.replicas:
        assert cluster.execute(replica, "SELECT pg_is_in_recovery()") == [("t",)]

    cluster.execute(
        cluster.primary,
        "CREATE TABLE t (id int, v text); INSERT INTO t VALUES (1, 'a|b'), (2, NULL)",
    )
    cluster.wait_replayed()
    for replica in cluster.replicas:
        assert cluster.execute(replica, "SELECT id, v FROM t ORDER BY id") == [
            ("1", "a|b"),
            ("2", ""),
        ]


def test_dsns_and_password_auth(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1, user="tester", password="s3cr'et/@:", database="appdb")
    parts = urlsplit(cluster.dsn)
    assert parts.scheme == "postgresql"
    assert parts.path == "/appdb"
    hosts = parts.netloc.rpartition("@")[2]
    assert hosts == ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)

    for node in cluster.nodes:
        result = psql_tcp(cluster, node.dsn, "SELECT current_user, current_database()")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "tester|appdb"
    # libpq takes the multi-host DSN and lands on the first host, the primary.
    result = psql_tcp(cluster, cluster.dsn, "SELECT inet_server_port()")
    assert result.stdout.strip() == str(cluster.primary.port), result.stderr

    wrong = cluster.primary.dsn.replace("s3cr", "nope", 1)
    refused = psql_tcp(cluster, wrong, "SELECT 1")
    assert refused.returncode != 0
    assert "password authentication failed" in refused.stderr
    no_password = f"postgresql://tester@127.0.0.1:{cluster.primary.port}/appdb"
    assert psql_tcp(cluster, no_password, "SELECT 1").returncode != 0


def test_zero_replicas(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(0)
    assert [node.name for node in cluster.nodes] == ["node0"]
    assert cluster.replicas == []
    cluster.execute(0, "CREATE TABLE t (x int)")
    cluster.wait_replayed()
    assert cluster.execute(0, "SELECT pg_is_in_recovery()") == [("f",)]


def test_synchronous_replica_and_settings(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2, synchronous_replica=1, settings={"work_mem": "7MB"})
    assert cluster.execute(0, "SHOW synchronous_standby_names") == [("node2",)]
    states = cluster.execute(
        0, "SELECT application_name, sync_state FROM pg_stat_replication ORDER BY 1"
    )
    assert states == [("node1", "async"), ("node2", "sync")]
    for node in cluster.nodes:
        assert cluster.execute(node, "SHOW work_mem") == [("7MB",)]
        assert cluster.execute(node, "SHOW wal_log_hints") == [("on",)]
        assert cluster.execute(node, "SHOW cluster_name") == [(node.name,)]


def test_base_dir_holds_the_data(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    fast = "/dev/shm" if os.path.isdir("/dev/shm") else None
    base = Path(tempfile.mkdtemp(prefix="hasql-basedir-", dir=fast))
    try:
        base.chmod(0o755)
        cluster = make_cluster(1, base_dir=base)
        for node in cluster.nodes:
            assert node.data_dir.is_relative_to(base)
            assert len(str(node.socket_dir)) < 80  # sockets stay on a short path
        cluster.execute(0, "CREATE TABLE t (x int)")
        cluster.wait_replayed()
        cluster.close()
        assert list(base.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if os.geteuid() == 0:  # the servers run as an unprivileged user who cannot enter tmp_path
        private = tmp_path / "private"
        private.mkdir(mode=0o700)
        with pytest.raises(ClusterError, match="not reachable by the user"):
            make_cluster(0, base_dir=private)


def test_port_clash_at_restart_moves_the_node(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(1, proxied=True)
    replica = cluster.nodes[1]
    old_port = replica.port
    cluster.stop(replica)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        cluster.start_node(replica)
    assert replica.port != old_port
    assert cluster.proxy(replica).target == ("127.0.0.1", replica.port)
    result = psql_tcp(cluster, replica.proxied_dsn, "SELECT inet_server_port()")
    assert result.stdout.strip() == str(replica.port), result.stderr
    cluster.wait_streaming(replica)
