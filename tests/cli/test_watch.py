"""``hasql watch`` against a real local cluster, redirected (not a terminal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from hasql_core.testing.cluster import LocalCluster

from .conftest import closed_port, run_cli


def test_watch_duration_prints_hosts(shared_cluster: LocalCluster) -> None:
    started = time.monotonic()
    result = run_cli("watch", shared_cluster.dsn, "--duration", "3", "--interval", "0.5")
    assert time.monotonic() - started < 20
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for node in shared_cluster.nodes:
        assert str(node.port) in result.stdout
    assert "primary" in result.stdout
    assert "standby" in result.stdout
    assert shared_cluster.password not in result.stdout + result.stderr


def test_watch_logs_a_change(own_cluster: LocalCluster) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hasql_core.cli",
            "watch",
            own_cluster.dsn,
            "--interval",
            "0.3",
            "--duration",
            "6",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(2.5)
    own_cluster.kill(own_cluster.replicas[0])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    replica_port = own_cluster.nodes[1].port
    assert f"127.0.0.1:{replica_port}: standby -> unavailable" in out
    assert own_cluster.password not in out + err


def test_watch_ctrl_c_exits_cleanly() -> None:
    dsn = f"postgresql://app:pw@127.0.0.1:{closed_port()}/db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hasql_core.cli", "watch", dsn, "--interval", "0.5"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(3)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "unavailable" in out
