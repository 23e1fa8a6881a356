"""Teardown leaves nothing behind; leftovers of a dead owner are removed at the next start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing import _postmaster, _procs
from hasql_core.testing.cluster import LocalCluster

from .conftest import ClusterFactory
from .helpers import pids_with_cwd_under, shm_ids, wait_for

pytestmark = pytest.mark.cluster


def _footprint(cluster: LocalCluster) -> dict[str, list[int] | list[str]]:
    """Every pid, directory, socket and shm segment the running cluster uses."""
    pids: list[int] = []
    shm: list[int] = []
    for node in cluster.nodes:
        if node.pid is not None:
            pids += [node.pid, *_procs.descendants(node.pid)]
        info = _postmaster.read_pidfile(node.data_dir)
        if info is not None and info.shm_id is not None:
            shm.append(info.shm_id)
    paths = [str(node.node_dir) for node in cluster.nodes]
    paths += [str(node.socket_dir) for node in cluster.nodes]
    paths.append(str(cluster.nodes[0].socket_dir.parent))
    return {"pids": pids, "shm": shm, "paths": paths}


def _assert_gone(footprint: dict[str, list[int] | list[str]]) -> None:
    alive = [pid for pid in footprint["pids"] if isinstance(pid, int) and _procs.pid_alive(pid)]
    assert alive == []
    for path in footprint["paths"]:
        assert not Path(str(path)).exists(), path
        assert pids_with_cwd_under(Path(str(path))) == []
    assert shm_ids().isdisjoint(int(x) for x in footprint["shm"])


def test_close_leaves_nothing(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(2, proxied=True)
    footprint = _footprint(cluster)
    proxy_server = cluster._proxy_server
    assert proxy_server is not None
    footprint["pids"] = [*footprint["pids"], proxy_server.pid]
    assert len(footprint["shm"]) == 3
    # The awkward states: a crashed node (its segment outlives it) and a frozen one.
    cluster.kill(1)
    cluster.freeze(2)

    cluster.close()
    _assert_gone(footprint)
    assert cluster.nodes[0].state == "stopped"
    cluster.close()  # idempotent
    with pytest.raises(ClusterError, match="closed"):
        cluster.execute(0, "SELECT 1")


def test_failed_start_cleans_up(pg_bindir: Path) -> None:
    cluster = LocalCluster(1, bindir=pg_bindir, settings={"shared_buffers": "bogus"})
    with pytest.raises(ClusterError, match="node0 exited") as info:
        cluster.start()
    assert "shared_buffers" in str(info.value)  # the server log's complaint is in the message
    assert cluster.nodes
    _assert_gone({"pids": [], "shm": [], "paths": [str(n.node_dir) for n in cluster.nodes]})
    assert not cluster.nodes[0].socket_dir.parent.exists()


_CHILD = textwrap.dedent(
    """
    import json, sys
    from hasql_core.testing.cluster import LocalCluster
    from hasql_core.testing import _procs, _postmaster
    cluster = LocalCluster(1, bindir=sys.argv[1], proxied=True).start()
    cluster.kill(1)  # leave a crashed node too: its shared memory outlives it
    pids, shm = [], []
    for node in cluster.nodes:
        info = _postmaster.read_pidfile(node.data_dir)
        shm.append(info.shm_id)
        if node.pid:
            pids += [node.pid, *_procs.descendants(node.pid)]
    print(json.dumps({
        "pids": pids + [cluster._proxy_server.pid],
        "postmaster": cluster.nodes[0].pid,
        "shm": shm,
        "paths": [str(n.node_dir) for n in cluster.nodes] + [str(cluster.nodes[0].socket_dir.parent)],
    }), flush=True)
    sys.stdin.read()
    """
)


def test_leftovers_of_a_dead_owner_are_removed(
    pg_bindir: Path, make_cluster: ClusterFactory
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(pg_bindir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, "the child process failed to build its cluster"
        footprint = json.loads(line)
    finally:
        os.kill(child.pid, signal.SIGKILL)  # no atexit, no close(): the owner just dies
        child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()
    postmaster = footprint["postmaster"]
    assert _procs.pid_alive(postmaster), "the orphaned postmaster outlives its owner"

    make_cluster(0)  # any start reaps leftovers of dead owners

    _assert_gone(footprint)
    wait_for(lambda: not _procs.pid_alive(postmaster), "the leftover postmaster to be gone")
