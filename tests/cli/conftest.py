"""Helpers for the ``hasql`` command tests: run the command as a subprocess, make clusters."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing.binaries import find_pg_bindir
from hasql_core.testing.cluster import LocalCluster


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hasql_core.cli ARGS`` with stdout and stderr captured (not a terminal)."""
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    return subprocess.run(
        [sys.executable, "-m", "hasql_core.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def closed_port() -> int:
    """A localhost TCP port nothing listens on (bound then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_available() -> None:
    """Skip when no PostgreSQL binaries are installed."""
    try:
        find_pg_bindir()
    except ClusterError as error:
        pytest.skip(f"no PostgreSQL binaries: {error}")


@pytest.fixture(scope="module")
def shared_cluster(pg_available: None) -> Iterator[LocalCluster]:
    """A primary and two replicas, shared by the read-only tests of a module."""
    with LocalCluster(replicas=2, synchronous_replica=0) as cluster:
        yield cluster


@pytest.fixture
def own_cluster(pg_available: None) -> Iterator[LocalCluster]:
    """A primary and one replica for one test that breaks things."""
    with LocalCluster(replicas=1) as cluster:
        yield cluster
