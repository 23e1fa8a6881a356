"""``hasql demo --short`` against the embedded PostgreSQL: passes and loses no acknowledged write."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from .conftest import run_cli


def test_demo_short_loses_no_acknowledged_write(pg_available: None) -> None:
    result = run_cli("demo", "--short", timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "Traceback" not in out + result.stderr
    for number in range(1, 6):
        assert f"Scene {number}:" in out
    lost = re.search(r"^lost acknowledged writes: (\d+)$", out, re.MULTILINE)
    acked = re.search(r"^acknowledged writes: (\d+)$", out, re.MULTILINE)
    assert lost is not None and acked is not None
    assert lost.group(1) == "0"
    assert int(acked.group(1)) > 0
    assert "reads served by the wrong role: 0" in out
    assert re.search(r"^reads beyond the lag limit: 0 ", out, re.MULTILINE)
    assert re.search(r"^writes resumed [0-9.]+s after the promotion", out, re.MULTILINE)
    assert "result: PASS" in out


def test_demo_without_binaries_says_how_to_get_them() -> None:
    env = dict(os.environ, HASQL_PG_BINDIR="/nonexistent/pg/bin")
    result = subprocess.run(
        [sys.executable, "-m", "hasql_core.cli", "demo", "--short"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 2
    assert "no PostgreSQL binaries" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_ctrl_c_cleans_up(pg_available: None) -> None:
    import signal
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "hasql_core.cli", "demo", "--short"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    for line in proc.stdout:  # interrupt during the freeze scene, the hardest to unwind
        if "freeze node" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert "Traceback" not in out + err
