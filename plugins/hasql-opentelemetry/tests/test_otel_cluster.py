"""The observer on a real local cluster (a primary and two streaming replicas, asyncpg driver), read
through the SDK's in-memory reader: every metric for each of the three hosts, then a primary crash
(kill -9 + promote) seen as role changes and a failover."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hasql_opentelemetry import names
from opentelemetry.sdk.metrics.export import Gauge
from otel_helpers import (
    POOL_METRICS,
    Telemetry,
    convention,
    eventually,
    histogram_point,
    instrument_kind,
    total_of,
    value_of,
)

from hasql_core import PoolManager
from hasql_core.host_state import Role
from hasql_core.metrics import TIME_BUCKETS

pytestmark = [pytest.mark.timeout(180), pytest.mark.hasql_cluster(replicas=2)]

#: (instrument kind, unit) of each cluster metric.
CLUSTER_METRICS = {
    names.HOST_AVAILABLE: ("up_down_counter", "{host}"),
    names.HOST_ROLE_STATE: ("up_down_counter", "{host}"),
    names.HOST_STALE: ("up_down_counter", "{host}"),
    names.HOST_HELD_BACK: ("up_down_counter", "{host}"),
    names.HOST_LAG_TIME: ("gauge", "s"),
    names.HOST_LAG_WAL: ("gauge", "By"),
    names.HOST_PROBE_DURATION: ("gauge", "s"),
    names.HOST_DISCARDED: ("counter", "{connection}"),
    names.ACQUIRE_WAITING: ("up_down_counter", "{request}"),
    names.ACQUIRE_LAG_REFUSALS: ("counter", "{acquire}"),
    names.ACQUIRE_UNSERVED_TIMEOUTS: ("counter", "{timeout}"),
}


def _kind_of(metric: Any) -> str:
    return "gauge" if isinstance(metric.data, Gauge) else instrument_kind(metric)


async def _write(pm: PoolManager, timeout: float = 10.0) -> None:
    async with pm.acquire_master(timeout=timeout) as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS otel_probe (id int)")
        await conn.execute("INSERT INTO otel_probe VALUES (1)")


async def test_every_metric_for_three_hosts_then_a_crash_is_a_failover(
    hasql_cluster: Any, telemetry: Telemetry
) -> None:
    cluster = hasql_cluster
    pool_of = {node.name: f"127.0.0.1:{node.port}/{cluster.database}" for node in cluster.nodes}
    old, new, other = cluster.nodes
    pm = PoolManager(
        cluster.dsn,
        driver="asyncpg",
        observers=[telemetry.observer],
        balancer_policy="round_robin",
        refresh_delay=0.2,
        pool_factory_kwargs={"min_size": 1, "max_size": 3},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=2, timeout=30)
        await _write(pm)
        async with pm.acquire_master(), pm.acquire_replica() as r1, pm.acquire_replica() as r2:
            assert await r1.fetchval("SELECT pg_is_in_recovery()")
            assert await r2.fetchval("SELECT pg_is_in_recovery()")
            held = telemetry.collect()
        # asyncpg's reset queries finish after the block was left (in the background).
        await eventually(
            lambda: all(host.pool.in_use == 0 for host in pm.metrics().hosts),
            what="every connection back in its pool",
        )
        found = telemetry.collect()

        for name in POOL_METRICS:
            metric = found[name]
            assert (instrument_kind(metric), metric.unit) == convention(name), name
        for name, (kind, unit) in CLUSTER_METRICS.items():
            assert (_kind_of(found[name]), found[name].unit) == (kind, unit), name
        for node in cluster.nodes:
            role = "primary" if node is old else "standby"
            attributes = {names.POOL_NAME: pool_of[node.name], names.HOST_ROLE: role}
            used = {**attributes, names.CONNECTION_STATE: "used"}
            assert value_of(held[names.CONNECTION_COUNT], used) == 1, node.name
            assert value_of(found[names.CONNECTION_COUNT], used) == 0, node.name
            idle = value_of(
                found[names.CONNECTION_COUNT], {**attributes, names.CONNECTION_STATE: "idle"}
            )
            assert idle is not None and idle >= 1
            assert value_of(found[names.CONNECTION_MAX], attributes) == 3
            assert value_of(found[names.CONNECTION_IDLE_MAX], attributes) == 3
            assert value_of(found[names.CONNECTION_IDLE_MIN], attributes) == 1
            assert value_of(found[names.CONNECTION_PENDING_REQUESTS], attributes) == 0
            assert value_of(found[names.CONNECTION_TIMEOUTS], attributes) == 0
            for name in (names.CONNECTION_WAIT_TIME, names.CONNECTION_USE_TIME):
                point = histogram_point(found[name], attributes)
                assert point is not None and point.count >= 1, (name, node.name)
                assert list(point.explicit_bounds) == list(TIME_BUCKETS)
                assert point.sum > 0
            assert value_of(found[names.HOST_AVAILABLE], attributes) == 1
            for each in Role:
                state = {names.POOL_NAME: pool_of[node.name], names.HOST_ROLE: each.value}
                assert value_of(found[names.HOST_ROLE_STATE], state) == int(each.value == role)
            probe = value_of(found[names.HOST_PROBE_DURATION], attributes)
            assert probe is not None and 0 < probe < 2
            assert value_of(found[names.HOST_STALE], attributes) == 0
            assert value_of(found[names.HOST_HELD_BACK], attributes) == 0
            assert value_of(found[names.HOST_DISCARDED], attributes) == 0
            for name in (names.HOST_LAG_TIME, names.HOST_LAG_WAL):
                lag = value_of(found[name], attributes)
                if node is old:
                    assert lag is None, name  # a primary has no lag
                else:
                    assert lag is not None and lag >= 0, (name, node.name)
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in cluster.nodes)
        everyone = {names.CLUSTER: f"{hosts}/{cluster.database}"}
        assert value_of(found[names.ACQUIRE_WAITING], everyone) == 0
        assert value_of(found[names.ACQUIRE_LAG_REFUSALS], everyone) == 0
        assert total_of(found, names.FAILOVERS, {}) == 0
        assert total_of(found, names.HOST_ROLE_CHANGES, {}) == 0

        # A primary crash: kill -9, promote a replica, re-point the other.
        await asyncio.to_thread(cluster.kill, old)
        await asyncio.to_thread(cluster.promote, new)
        await asyncio.to_thread(cluster.repoint, other, new)
        await _write(pm)
        await eventually(lambda: pm.host_states()[0].role is Role.UNAVAILABLE)
        found = telemetry.collect()
        assert total_of(found, names.FAILOVERS, {}) == 1
        assert (
            total_of(found, names.FAILOVERS, {**everyone, names.POOL_NAME: pool_of[new.name]}) == 1
        )
        crashed = {
            names.POOL_NAME: pool_of[old.name],
            names.PREVIOUS_ROLE: "primary",
            names.HOST_ROLE: "unavailable",
        }
        assert total_of(found, names.HOST_ROLE_CHANGES, crashed) == 1
        promoted = {
            names.POOL_NAME: pool_of[new.name],
            names.PREVIOUS_ROLE: "standby",
            names.HOST_ROLE: "primary",
        }
        assert total_of(found, names.HOST_ROLE_CHANGES, promoted) == 1
        down = {names.POOL_NAME: pool_of[old.name], names.HOST_ROLE: "unavailable"}
        assert value_of(found[names.HOST_AVAILABLE], down) == 0
        assert value_of(found[names.HOST_ROLE_STATE], down) == 1
        now_primary = {names.POOL_NAME: pool_of[new.name], names.HOST_ROLE: "primary"}
        assert value_of(found[names.HOST_ROLE_STATE], now_primary) == 1
        errors = total_of(found, names.HOST_ERRORS, {names.POOL_NAME: pool_of[old.name]})
        assert errors >= 1  # the failed probes of the crashed host
    finally:
        await pm.close()
