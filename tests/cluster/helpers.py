"""Helpers shared by the local-cluster tests: bounded polling, a TCP psql client, /proc scans."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hasql_core.testing.cluster import LocalCluster, Node


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it is truthy; fail the test naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def psql_tcp(
    cluster: LocalCluster, dsn: str, sql: str, *, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """Run ``sql`` with psql over TCP as a client would (password in the DSN)."""
    return subprocess.run(
        [str(cluster.bindir / "psql"), "-X", "-A", "-t", "-d", dsn, "-c", sql],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PG")},
            "PGSSLMODE": "disable",
        },
        check=False,
    )


def pids_with_cwd_under(directory: Path) -> list[int]:
    """Every process whose working directory is ``directory`` or below it."""
    prefix = os.path.realpath(directory)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cwd = os.readlink(f"/proc/{entry.name}/cwd")
            except OSError:
                continue
            if cwd == prefix or cwd.startswith(prefix + "/"):
                found.append(int(entry.name))
    return found


def shm_ids() -> set[int]:
    """The ids of every System V shared memory segment on the machine."""
    lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    return {int(line.split()[1]) for line in lines if line.strip()}


def state_of(node: Node) -> str:
    """``node.state`` (a function, so that type checkers do not narrow it across operations)."""
    return node.state
