"""``hasql demo --short --metrics``: the demo's manager reports through this plugin (found by its
entry point) and the summary ends with the pool and cluster metrics as Prometheus text."""

from __future__ import annotations

import asyncio
import sys

import pytest

pytestmark = pytest.mark.timeout(300)


async def test_demo_prints_the_metrics_as_prometheus_text() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hasql_core.cli",
        "demo",
        "--short",
        "--metrics",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 240)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text[-3000:]
    assert "result: PASS" in text
    _, _, metrics = text.partition("metrics (hasql-opentelemetry, Prometheus text):")
    assert metrics, text[-3000:]
    lines = [line for line in metrics.splitlines() if line and not line.startswith("#")]
    assert all(line.startswith(("db_client_connection_", "hasql_")) for line in lines), lines[:5]
    names = {line.split("{")[0] for line in lines}
    for name in (
        "db_client_connection_count",
        "db_client_connection_wait_time_seconds_count",
        "hasql_host_role",
        "hasql_host_available",
        "hasql_failovers_total",
        "hasql_host_role_changes_total",
    ):
        assert name in names, (name, sorted(names))
    # The demo kills the primary and promotes node1: one failover, to node1.
    failovers = [line for line in lines if line.startswith("hasql_failovers_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in failovers) == 1
