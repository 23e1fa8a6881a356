"""The observer over hasql-core's fake driver: names, kinds, units and attributes against the
semantic conventions package, exact histograms, collection from other threads, close, pool and
cluster counters, failovers and split-brain episodes."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hasql_opentelemetry import OpenTelemetryObserver, names
from opentelemetry import metrics as otel_metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from otel_helpers import (
    POOL_METRICS,
    attribute_values,
    convention,
    eventually,
    histogram_point,
    instrument_kind,
    metrics_by_name,
    total_of,
    value_of,
)

from hasql_core import AcquireTimeoutError, PoolManager
from hasql_core.host_state import Role
from hasql_core.metrics import TIME_BUCKETS
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

FAST: dict[str, Any] = {"refresh_delay": 0.05, "refresh_timeout": 0.5, "acquire_timeout": 2.0}
POOLS = ["db0:5432/app", "db1:5432/app", "db2:5432/app"]
CLUSTER = {names.CLUSTER: "db0:5432,db1:5432,db2:5432/app"}


def pool(index: int, **more: str) -> dict[str, str]:
    """Attributes of host ``index``'s pool, plus ``more`` (keys with ``__`` for ``.``)."""
    return {names.POOL_NAME: POOLS[index], **{k.replace("__", "."): v for k, v in more.items()}}


@pytest.fixture
def cluster() -> FakeCluster:
    """Three simulated hosts: db0 primary, db1 and db2 standbys."""
    return FakeCluster(3)


@pytest.fixture
async def make_manager() -> AsyncIterator[Callable[..., PoolManager]]:
    """Managers over a fake cluster with one observer and fast probes; terminated after."""
    managers: list[PoolManager] = []

    def make(cluster: FakeCluster, observer: object, **kwargs: Any) -> PoolManager:
        manager = PoolManager(
            cluster.dsn, driver=FakeDriver(cluster), observers=[observer], **{**FAST, **kwargs}
        )
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.terminate()


async def test_pool_metrics_follow_the_conventions(cluster, make_manager, telemetry):
    pm = make_manager(
        cluster,
        telemetry.observer,
        balancer_policy="round_robin",
        pool_factory_kwargs={"min_size": 1, "max_size": 4},
    )
    await pm.ready(masters_count=1, replicas_count=2)
    async with pm.acquire_master(), pm.acquire_replica(), pm.acquire_replica():
        held = telemetry.collect()
    found = telemetry.collect()
    for name in POOL_METRICS:
        metric = found[name]
        assert (instrument_kind(metric), metric.unit) == convention(name), name
        for index in range(3):
            matching = [
                p for p in metric.data.data_points if p.attributes[names.POOL_NAME] == POOLS[index]
            ]
            assert len(matching) == (2 if name == names.CONNECTION_COUNT else 1), (name, index)
            for point in matching:
                assert point.attributes[names.HOST_ROLE] == ("primary" if index == 0 else "standby")
    count = held[names.CONNECTION_COUNT]
    for index in range(3):
        assert value_of(count, pool(index, db__client__connection__state="used")) == 1
        assert value_of(count, pool(index, db__client__connection__state="idle")) == 0
        assert (
            value_of(
                found[names.CONNECTION_COUNT], pool(index, db__client__connection__state="used")
            )
            == 0
        )
        assert value_of(found[names.CONNECTION_MAX], pool(index)) == 4
        assert value_of(found[names.CONNECTION_IDLE_MAX], pool(index)) == 4
        assert value_of(found[names.CONNECTION_IDLE_MIN], pool(index)) == 1
        assert value_of(found[names.CONNECTION_PENDING_REQUESTS], pool(index)) == 0
        assert value_of(found[names.CONNECTION_TIMEOUTS], pool(index)) == 0
        for name in (names.CONNECTION_WAIT_TIME, names.CONNECTION_USE_TIME):
            point = histogram_point(found[name], pool(index))
            assert point is not None and point.count == 1
            assert list(point.explicit_bounds) == list(TIME_BUCKETS)
    # While the connections were out, nothing had been given back: no use time yet.
    assert names.CONNECTION_USE_TIME not in held


async def test_cluster_metrics_per_host(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    found = telemetry.collect()
    kinds = {
        names.HOST_AVAILABLE: ("up_down_counter", "{host}"),
        names.HOST_ROLE_STATE: ("up_down_counter", "{host}"),
        names.HOST_STALE: ("up_down_counter", "{host}"),
        names.HOST_HELD_BACK: ("up_down_counter", "{host}"),
        names.HOST_DISCARDED: ("counter", "{connection}"),
        names.ACQUIRE_WAITING: ("up_down_counter", "{request}"),
        names.ACQUIRE_LAG_REFUSALS: ("counter", "{acquire}"),
        names.ACQUIRE_UNSERVED_TIMEOUTS: ("counter", "{timeout}"),
    }
    for name, (kind, unit) in kinds.items():
        assert (instrument_kind(found[name]), found[name].unit) == (kind, unit), name
    for name, unit in {
        names.HOST_PROBE_DURATION: "s",
        names.HOST_LAG_TIME: "s",
        names.HOST_LAG_WAL: "By",
    }.items():
        assert found[name].unit == unit, name
    for index in range(3):
        role = "primary" if index == 0 else "standby"
        assert value_of(found[names.HOST_AVAILABLE], pool(index, hasql__host__role=role)) == 1
        for each in Role:
            expected = int(each.value == role)
            assert (
                value_of(found[names.HOST_ROLE_STATE], pool(index, hasql__host__role=each.value))
                == expected
            )
        probe = value_of(found[names.HOST_PROBE_DURATION], pool(index))
        assert probe is not None and probe >= 0
        assert value_of(found[names.HOST_STALE], pool(index)) == 0
        assert value_of(found[names.HOST_HELD_BACK], pool(index)) == 0
        assert value_of(found[names.HOST_DISCARDED], pool(index)) == 0
        for name in (names.HOST_LAG_WAL, names.HOST_LAG_TIME):
            lag = value_of(found[name], pool(index))
            assert lag == (None if index == 0 else 0), (name, index)  # a primary has no lag
    assert value_of(found[names.ACQUIRE_WAITING], CLUSTER) == 0
    assert value_of(found[names.ACQUIRE_LAG_REFUSALS], CLUSTER) == 0
    for wanted in ("primary", "replica"):
        assert (
            value_of(
                found[names.ACQUIRE_UNSERVED_TIMEOUTS], {**CLUSTER, names.ACQUIRE_ROLE: wanted}
            )
            == 0
        )


async def test_histograms_are_exact_per_bucket(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    for hold in (0.0, 0.0, 0.003, 0.03):
        async with pm.acquire_master():
            await asyncio.sleep(hold)
    telemetry.collect()
    for _ in range(3):
        async with pm.acquire_master():
            pass
    found = telemetry.collect()
    stats = pm.acquire_stats()
    assert stats is not None
    core = stats.hosts[0]
    for name, histogram in (
        (names.CONNECTION_WAIT_TIME, core.wait_time),
        (names.CONNECTION_USE_TIME, core.use_time),
    ):
        point = histogram_point(found[name], pool(0))
        assert point is not None
        assert point.count == histogram.count == 7
        assert list(point.bucket_counts) == list(histogram.counts)
        assert point.sum == pytest.approx(histogram.sum)
    use = histogram_point(found[names.CONNECTION_USE_TIME], pool(0))
    assert use is not None and use.max >= 0.03


async def test_collection_from_another_thread_and_a_blocked_loop(cluster, make_manager):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    observer = OpenTelemetryObserver(meter_provider=provider, read_timeout=0.2)
    try:
        pm = make_manager(cluster, observer)
        await pm.ready(masters_count=1, replicas_count=2)
        async with pm.acquire_master():
            pass
        # A collection in another thread reads the manager in its loop thread.
        found = await asyncio.to_thread(metrics_by_name, reader)
        point = histogram_point(found[names.CONNECTION_WAIT_TIME], pool(0))
        assert point is not None and point.count == 1
        async with pm.acquire_master():
            pass
        # With the loop blocked, the collection ends after read_timeout with the last snapshot.
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(metrics_by_name(reader)))
        thread.start()
        thread.join(10)  # blocks the event loop on purpose
        assert not thread.is_alive()
        point = histogram_point(result[names.CONNECTION_WAIT_TIME], pool(0))
        assert point is not None and point.count == 1
        found = metrics_by_name(reader)
        point = histogram_point(found[names.CONNECTION_WAIT_TIME], pool(0))
        assert point is not None and point.count == 2
    finally:
        provider.shutdown()


async def test_histograms_can_be_left_out(cluster, make_manager):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        pm = make_manager(cluster, OpenTelemetryObserver(provider, histograms=False))
        await pm.ready(masters_count=1, replicas_count=2)
        async with pm.acquire_master():
            pass
        found = metrics_by_name(reader)
        assert names.CONNECTION_WAIT_TIME not in found
        assert names.CONNECTION_USE_TIME not in found
        assert set(POOL_METRICS) - set(found) == {
            names.CONNECTION_WAIT_TIME,
            names.CONNECTION_USE_TIME,
        }
    finally:
        provider.shutdown()


async def test_a_closed_manager_is_no_longer_reported(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    other = make_manager(FakeCluster(3, base_port=6432), telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    await other.ready(masters_count=1, replicas_count=2)
    async with pm.acquire_master():
        pass
    await pm.close()
    found = telemetry.collect()
    pools = attribute_values(found[names.CONNECTION_COUNT], names.POOL_NAME)
    assert pools == {"db0:6432/app", "db1:6432/app", "db2:6432/app"}
    # The acquire made just before close() is recorded all the same.
    point = histogram_point(found[names.CONNECTION_WAIT_TIME], pool(0))
    assert point is not None and point.count == 1


async def test_pool_timeouts_pending_lag_refusals_and_unserved(cluster, make_manager, telemetry):
    pm = make_manager(
        cluster,
        telemetry.observer,
        max_lag_bytes=10,
        pool_factory_kwargs={"min_size": 1, "max_size": 1},
    )
    await pm.ready(masters_count=1, replicas_count=2)
    held = await pm.acquire_master()
    waiter = asyncio.ensure_future(pm.acquire_master(timeout=0.5))
    await eventually(
        lambda: value_of(telemetry.collect()[names.CONNECTION_PENDING_REQUESTS], pool(0)) == 1
    )
    with pytest.raises(AcquireTimeoutError):
        await waiter
    await pm.release(held)
    for standby in cluster.hosts[1:]:
        standby.stall_replay()
    cluster.write(1000)
    await eventually(lambda: pm.replica_pool_count == 0)
    with pytest.raises(AcquireTimeoutError):
        await pm.acquire_replica(timeout=0.1)
    found = telemetry.collect()
    assert value_of(found[names.CONNECTION_PENDING_REQUESTS], pool(0)) == 0
    assert value_of(found[names.CONNECTION_TIMEOUTS], pool(0)) == 1
    assert value_of(found[names.ACQUIRE_LAG_REFUSALS], CLUSTER) == 1
    unserved = {**CLUSTER, names.ACQUIRE_ROLE: "replica"}
    assert value_of(found[names.ACQUIRE_UNSERVED_TIMEOUTS], unserved) == 1
    for index in (1, 2):
        assert value_of(found[names.HOST_STALE], pool(index)) == 1
        assert (value_of(found[names.HOST_LAG_WAL], pool(index)) or 0) >= 1000


async def test_errors_by_kind(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    cluster.hosts[2].fail_next(1)
    await eventually(lambda: pm.metrics().hosts[2].errors.get("probe_error", 0) >= 1)
    found = telemetry.collect()
    errors = found[names.HOST_ERRORS]
    assert (instrument_kind(errors), errors.unit) == ("counter", "{error}")
    count = value_of(errors, pool(2, error__type="probe_error"))
    assert count is not None and count >= 1


async def test_failover_and_role_changes(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    found = telemetry.collect()
    assert total_of(found, names.FAILOVERS, {}) == 0
    assert total_of(found, names.HOST_ROLE_CHANGES, {}) == 0  # discovery is no change
    cluster.hosts[0].down = True
    cluster.hosts[1].promote()
    await eventually(lambda: pm.host_states()[1].role is Role.PRIMARY)
    await eventually(lambda: pm.host_states()[0].role is Role.UNAVAILABLE)
    found = telemetry.collect()
    assert total_of(found, names.FAILOVERS, {}) == 1
    assert total_of(found, names.FAILOVERS, {**CLUSTER, **pool(1)}) == 1
    crashed = pool(0, hasql__host__previous_role="primary", hasql__host__role="unavailable")
    assert total_of(found, names.HOST_ROLE_CHANGES, crashed) == 1
    promoted = pool(1, hasql__host__previous_role="standby", hasql__host__role="primary")
    assert total_of(found, names.HOST_ROLE_CHANGES, promoted) == 1
    # The old primary comes back as a standby: a role change, no failover.
    cluster.hosts[0].demote()
    cluster.hosts[0].down = False
    await eventually(lambda: pm.host_states()[0].role is Role.STANDBY)
    found = telemetry.collect()
    assert total_of(found, names.FAILOVERS, {}) == 1
    assert total_of(found, names.HOST_ROLE_CHANGES, {names.HOST_ROLE: "standby"}) == 1


async def test_split_brain_episodes(cluster, make_manager, telemetry):
    pm = make_manager(cluster, telemetry.observer)
    await pm.ready(masters_count=1, replicas_count=2)
    for episode in (1, 2):
        cluster.hosts[1].promote()
        await eventually(lambda: pm.host_states()[0].split_brain)
        found = telemetry.collect()
        assert total_of(found, names.SPLIT_BRAIN_EPISODES, CLUSTER) == episode
        cluster.hosts[1].demote()
        await eventually(lambda: pm.host_states()[1].role is Role.STANDBY)
        await eventually(lambda: not pm.host_states()[0].split_brain)
    found = telemetry.collect()
    assert total_of(found, names.SPLIT_BRAIN_EPISODES, {}) == 2
    # Writes moved to db1 (higher timeline) and back to db0, twice.
    assert total_of(found, names.FAILOVERS, pool(1)) == 2
    assert total_of(found, names.FAILOVERS, pool(0)) == 2


async def test_enabled_by_entry_point_name_on_the_global_provider(cluster):
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel_metrics.set_meter_provider(provider)
    try:
        async with PoolManager(
            cluster.dsn, driver=FakeDriver(cluster), observers=["opentelemetry"], **FAST
        ) as pm:
            await pm.ready(masters_count=1, replicas_count=2)
            async with pm.acquire_replica():
                pass
            found = metrics_by_name(reader)
        assert set(found) >= set(POOL_METRICS)
        assert attribute_values(found[names.CONNECTION_COUNT], names.POOL_NAME) == set(POOLS)
    finally:
        provider.shutdown()
