"""``hasql`` on bad input and unreachable hosts: clear one-line messages, exit codes, no traceback."""

from __future__ import annotations

import json
import time

import pytest

from hasql_core.cli.status import verdict, with_lag
from hasql_core.host_state import HostState, Role

from .conftest import closed_port, run_cli

SECRET = "s3cr3t-Pa55"


def test_bad_dsn_exits_2_with_one_line() -> None:
    result = run_cli("status", f"mysql://u:{SECRET}@h/db")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "invalid DSN" in result.stderr
    assert result.stderr.count("\n") == 1
    assert SECRET not in result.stderr + result.stdout


def test_known_driver_not_installed_says_what_to_install() -> None:
    result = run_cli("status", f"postgresql://u:{SECRET}@h/db", "--driver", "aiopg")
    assert result.returncode == 2
    assert "pip install hasql-aiopg" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stderr + result.stdout


@pytest.mark.parametrize("command", ["watch", "demo"])
def test_misspelt_driver_other_commands(command: str) -> None:
    args = [command, "--driver", "asyncgp"]
    if command == "watch":
        args.insert(1, "postgresql://u@h/db")
    result = run_cli(*args)
    assert result.returncode == 2
    assert "Did you mean 'asyncpg'" in result.stderr
    assert "pip install" not in result.stderr  # no invented distribution name
    assert "Traceback" not in result.stderr


def test_bad_option_value_is_usage_error() -> None:
    result = run_cli("status", "postgresql://h/db", "--timeout", "-1")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("as_json", [True, False])
def test_unreachable_hosts_all_unavailable(as_json: bool) -> None:
    dsn = f"postgresql://app:{SECRET}@127.0.0.1:{closed_port()},127.0.0.1:{closed_port()}/db"
    started = time.monotonic()
    result = run_cli("status", dsn, "--timeout", "1", *(["--json"] if as_json else []))
    elapsed = time.monotonic() - started
    assert elapsed < 1 + 8  # the timeout plus the interpreter's start-up
    assert result.returncode == 1
    assert "no primary" in result.stderr
    assert "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    if as_json:
        hosts = json.loads(result.stdout)
        assert [h["available"] for h in hosts] == [False, False]
        assert all(h["role"] == "unavailable" and h["last_error"] for h in hosts)
    else:
        assert result.stdout.count("unavailable") == 2


def test_blackhole_host_bounded_by_timeout() -> None:
    # 192.0.2.1 (TEST-NET-1) is never routed: the connect hangs until the timeout.
    started = time.monotonic()
    result = run_cli("status", "postgresql://app:x@192.0.2.1:5432/db", "--json", "--timeout", "1")
    assert time.monotonic() - started < 1 + 8
    assert result.returncode == 1
    assert json.loads(result.stdout)[0]["available"] is False


def _standby(port: int, replay: int, receive: int | None, age: float | None) -> HostState:
    return HostState(
        host="h", port=port, role=Role.STANDBY, wal_lsn=replay, receive_lsn=receive, lag_seconds=age
    )


def test_with_lag_against_primary_lsn() -> None:
    primary = HostState(host="h", port=1, role=Role.PRIMARY, wal_lsn=1000, timeline=1)
    caught_up = _standby(2, 1000, 1000, 5.0)
    behind = _standby(3, 400, 400, 2.5)
    ahead_of_probe = _standby(4, 900, 1200, 0.3)  # received more than the primary's probe saw
    states = with_lag([primary, caught_up, behind, ahead_of_probe])
    assert states[1].lag_bytes == 0
    assert states[1].lag_seconds == 0.0
    assert states[2].lag_bytes == 600
    assert states[2].lag_seconds == 2.5
    assert states[3].lag_bytes == 300
    assert verdict(states) is None


def test_verdict_split_brain_and_none() -> None:
    old = HostState(host="h", port=1, role=Role.PRIMARY, wal_lsn=10, timeline=1)
    new = HostState(host="h", port=2, role=Role.PRIMARY, wal_lsn=10, timeline=2)
    states = with_lag([old, new])
    assert states[0].split_brain
    assert not states[1].split_brain
    assert "split brain" in (verdict(states) or "")
    down = HostState(host="h", port=3, role=Role.UNAVAILABLE)
    assert "no primary" in (verdict([down]) or "")
    read_only = HostState(host="h", port=1, role=Role.PRIMARY, read_only=True)
    assert "read-only" in (verdict([read_only]) or "")
