"""The Prometheus example (examples/prometheus_app.py) on a real cluster: a scrape returns the pool
and cluster metrics under the names Prometheus renders, and every metric and label the Grafana
dashboard queries exists in it (after a failover, so the event counters have series too)."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import hasql_opentelemetry
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = [pytest.mark.timeout(240), pytest.mark.hasql_cluster(replicas=2)]

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "prometheus_app.py"

#: Each metric as Prometheus renders it (sample names; a histogram's buckets, sum and count).
RENDERED = {
    "db.client.connection.count": ["db_client_connection_count"],
    "db.client.connection.idle.max": ["db_client_connection_idle_max"],
    "db.client.connection.idle.min": ["db_client_connection_idle_min"],
    "db.client.connection.max": ["db_client_connection_max"],
    "db.client.connection.pending_requests": ["db_client_connection_pending_requests"],
    "db.client.connection.timeouts": ["db_client_connection_timeouts_total"],
    "db.client.connection.wait_time": [
        "db_client_connection_wait_time_seconds_bucket",
        "db_client_connection_wait_time_seconds_sum",
        "db_client_connection_wait_time_seconds_count",
    ],
    "db.client.connection.use_time": [
        "db_client_connection_use_time_seconds_bucket",
        "db_client_connection_use_time_seconds_sum",
        "db_client_connection_use_time_seconds_count",
    ],
    "hasql.host.available": ["hasql_host_available"],
    "hasql.host.role": ["hasql_host_role"],
    "hasql.host.lag.time": ["hasql_host_lag_time_seconds"],
    "hasql.host.lag.wal": ["hasql_host_lag_wal_bytes"],
    "hasql.host.probe.duration": ["hasql_host_probe_duration_seconds"],
    "hasql.host.stale": ["hasql_host_stale"],
    "hasql.host.held_back": ["hasql_host_held_back"],
    "hasql.host.errors": ["hasql_host_errors_total"],
    "hasql.host.discarded": ["hasql_host_discarded_total"],
    "hasql.host.role_changes": ["hasql_host_role_changes_total"],
    "hasql.failovers": ["hasql_failovers_total"],
    "hasql.split_brain.episodes": ["hasql_split_brain_episodes_total"],
    "hasql.acquire.lag_refusals": ["hasql_acquire_lag_refusals_total"],
    "hasql.acquire.unserved_timeouts": ["hasql_acquire_unserved_timeouts_total"],
    "hasql.acquire.waiting": ["hasql_acquire_waiting"],
}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset"}


def promql_names(expr: str) -> tuple[set[str], set[str]]:
    """(metric names, label names) a PromQL expression refers to (enough PromQL for dashboards:
    selectors, label matchers, ``by``/``without`` groupings, functions, ranges)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    labels: set[str] = set()
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        labels |= set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", matchers))
    for grouping in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        labels |= {label.strip() for label in grouping.split(",") if label.strip()}
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring)\s*\([^)]*\)", " ", expr)
    metrics = {
        found[0]
        for found in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr)
        if found[0] not in _KEYWORDS and not expr[found.end() :].lstrip().startswith("(")
    }
    return metrics, labels


def test_promql_names_reads_dashboard_queries() -> None:
    metrics, labels = promql_names(
        'histogram_quantile(0.99, sum by (le, pool) (rate(x_bucket{pool=~"$p", a!="b"}[5m])))'
        " + 3 * max without (c) (y)"
    )
    assert metrics == {"x_bucket", "y"}
    assert labels == {"le", "pool", "a", "c"}


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        definition = variable.get("definition", "")
        found = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", definition)
        if found:
            queries.append(f'{found[1]}{{{found[2]}!=""}}')
    return queries


def scrape(url: str) -> dict[str, list[Any]]:
    """Samples of one scrape, by sample name."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


@pytest.fixture
async def example(hasql_cluster: Any) -> AsyncIterator[tuple[str, list[str]]]:
    """The example app running on the cluster: its metrics URL, and its output lines so far."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--port",
        "0",
        "--seconds",
        "200",
        env={**os.environ, "HASQL_DSN": hasql_cluster.dsn},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output: list[str] = []

    async def drain() -> None:
        assert process.stdout is not None
        async for line in process.stdout:
            output.append(line.decode(errors="replace").rstrip())

    draining = asyncio.ensure_future(drain())
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        while not any(line.startswith("metrics on ") for line in output):
            assert process.returncode is None, output
            assert loop.time() < deadline, output
            await asyncio.sleep(0.05)
        url = next(line for line in output if line.startswith("metrics on ")).split()[-1]
        yield url, output
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 30)
        await asyncio.wait_for(draining, 30)


async def _scrape_until(
    url: str, check: Callable[[dict[str, list[Any]]], bool], output: list[str], timeout: float = 60
) -> dict[str, list[Any]]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        samples = await asyncio.to_thread(scrape, url)
        if check(samples):
            return samples
        assert loop.time() < deadline, (sorted(samples), output[-20:])
        await asyncio.sleep(0.2)


def _pools(samples: dict[str, list[Any]], name: str) -> set[str]:
    return {s.labels.get("db_client_connection_pool_name") for s in samples.get(name, [])}


async def test_scrape_has_every_metric_and_the_dashboard_queries_exist(
    hasql_cluster: Any, example: tuple[str, list[str]]
) -> None:
    cluster = hasql_cluster
    url, output = example
    pools = {f"127.0.0.1:{node.port}/{cluster.database}" for node in cluster.nodes}
    await _scrape_until(
        url,
        lambda s: (
            _pools(s, "db_client_connection_count") == pools
            and bool(s.get("db_client_connection_use_time_seconds_count"))
        ),
        output,
    )
    old, new, _ = cluster.nodes
    # Promote a replica while the primary still runs (a split brain), then crash the old primary.
    await asyncio.to_thread(cluster.promote, new)
    await _scrape_until(
        url,
        lambda s: sum(x.value for x in s.get("hasql_split_brain_episodes_total", [])) >= 1,
        output,
    )
    await asyncio.to_thread(cluster.kill, old)
    samples = await _scrape_until(
        url,
        lambda s: (
            sum(x.value for x in s.get("hasql_failovers_total", [])) >= 1
            and any(
                x.labels.get("hasql_host_role") == "unavailable"
                for x in s.get("hasql_host_role_changes_total", [])
            )
            and bool(s.get("hasql_host_errors_total"))
        ),
        output,
    )
    for name, rendered in RENDERED.items():
        for sample_name in rendered:
            assert sample_name in samples, (name, sample_name)
    assert set(RENDERED) == set(hasql_opentelemetry.names.ALL_METRICS)
    for name in ("db_client_connection_count", "hasql_host_available", "hasql_host_role"):
        assert _pools(samples, name) == pools, name
    failover = samples["hasql_failovers_total"]
    assert {x.labels["db_client_connection_pool_name"] for x in failover if x.value} == {
        f"127.0.0.1:{new.port}/{cluster.database}"
    }

    queries = _dashboard_queries(hasql_opentelemetry.dashboard())
    assert len(queries) >= 15
    for query in queries:
        metrics, labels = promql_names(query)
        assert metrics, query
        known_labels = {"le"}
        for metric in metrics:
            assert metric in samples, (metric, query)
            known_labels |= {label for s in samples[metric] for label in s.labels}
        assert labels <= known_labels, (labels - known_labels, query)
