"""``hasql status`` against a real local cluster."""

from __future__ import annotations

import json
import time

from hasql_core.testing.cluster import LocalCluster

from .conftest import run_cli


def _roles(stdout: str) -> list[str]:
    return [host["role"] for host in json.loads(stdout)]


def test_status_json_healthy(shared_cluster: LocalCluster) -> None:
    result = run_cli("status", shared_cluster.dsn, "--json")
    assert result.returncode == 0, result.stderr
    hosts = json.loads(result.stdout)
    assert [h["port"] for h in hosts] == [node.port for node in shared_cluster.nodes]
    assert _roles(result.stdout) == ["primary", "standby", "standby"]
    assert all(h["available"] for h in hosts)
    assert [h["read_only"] for h in hosts] == [False, True, True]
    assert all(h["timeline"] == 1 for h in hosts)
    assert all(h["rtt_ms"] is not None and h["rtt_ms"] >= 0 for h in hosts)
    for standby in hosts[1:]:
        assert standby["lag_bytes"] is not None and standby["lag_bytes"] >= 0
    assert shared_cluster.password not in result.stdout + result.stderr


def test_status_table_redacts_password(shared_cluster: LocalCluster) -> None:
    result = run_cli("status", shared_cluster.dsn)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert shared_cluster.password not in result.stdout + result.stderr
    assert "***" in result.stdout  # the redacted DSN in the title
    assert result.stdout.count("standby") == 2
    assert result.stdout.count("primary") == 1


def test_status_wrong_password_is_redacted(shared_cluster: LocalCluster) -> None:
    dsn = shared_cluster.dsn.replace(shared_cluster.password, "Wr0ngPassw0rd")
    result = run_cli("status", dsn, "--json")
    assert result.returncode == 1
    assert "Wr0ngPassw0rd" not in result.stdout + result.stderr
    assert all(not h["available"] for h in json.loads(result.stdout))


def test_status_after_primary_killed(own_cluster: LocalCluster) -> None:
    own_cluster.kill(own_cluster.primary)
    started = time.monotonic()
    result = run_cli("status", own_cluster.dsn, "--json", "--timeout", "1")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "no primary" in result.stderr
    assert _roles(result.stdout) == ["unavailable", "standby"]
    assert own_cluster.password not in result.stdout + result.stderr


def test_status_failover_then_split_brain(own_cluster: LocalCluster) -> None:
    old, new = own_cluster.nodes
    own_cluster.freeze(old)
    own_cluster.promote(new)
    result = run_cli("status", own_cluster.dsn, "--json", "--timeout", "1")
    assert result.returncode == 0, result.stderr
    assert _roles(result.stdout) == ["unavailable", "primary"]
    assert json.loads(result.stdout)[1]["timeline"] == 2

    own_cluster.thaw(old)  # the old primary comes back still believing it is the primary
    result = run_cli("status", own_cluster.dsn, "--json", "--timeout", "2")
    assert result.returncode == 1
    assert "split brain" in result.stderr
    hosts = json.loads(result.stdout)
    assert _roles(result.stdout) == ["primary", "primary"]
    assert [h["split_brain"] for h in hosts] == [True, False]
    assert own_cluster.password not in result.stdout + result.stderr
