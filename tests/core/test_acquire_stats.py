"""Acquire-path figures (``PoolManager.enable_acquire_stats`` / ``acquire_stats``) and the manager
lifecycle hooks observers use to ask for them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hasql_core import AcquireTimeoutError, PoolManager, hookimpl
from hasql_core.metrics import AcquireStats, TimeHistogram
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

from .conftest import wait_for


def _stats(pm: PoolManager) -> AcquireStats:
    stats = pm.acquire_stats()
    assert stats is not None
    return stats


def _check_buckets(histogram: TimeHistogram) -> None:
    """Each non-empty bucket's mean lies inside the bucket."""
    bounds = (0.0, *histogram.boundaries, float("inf"))
    assert len(histogram.counts) == len(histogram.sums) == len(histogram.boundaries) + 1
    for i, (count, total) in enumerate(zip(histogram.counts, histogram.sums, strict=True)):
        if count:
            assert bounds[i] <= total / count <= bounds[i + 1]
        else:
            assert total == 0.0


async def test_not_counted_unless_enabled(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2)
    async with pm.acquire_master():
        pass
    assert pm.acquire_stats() is None


async def test_wait_and_use_times_per_host(cluster, make_manager):
    pm = make_manager(cluster)
    pm.enable_acquire_stats()
    pm.enable_acquire_stats()  # idempotent: the figures are kept
    await pm.ready(masters_count=1, replicas_count=2)
    for _ in range(3):
        async with pm.acquire_master():
            pass
    conn = await pm.acquire_replica()
    await pm.release(conn)
    stats = _stats(pm)
    assert [h.host for h in stats.hosts] == ["db0:5432", "db1:5432", "db2:5432"]
    primary = stats.hosts[0]
    assert primary.wait_time.count == 3
    assert primary.use_time.count == 3
    assert sum(h.wait_time.count for h in stats.hosts[1:]) == 1
    assert sum(h.use_time.count for h in stats.hosts[1:]) == 1
    for host in stats.hosts:
        _check_buckets(host.wait_time)
        _check_buckets(host.use_time)
        assert host.timeouts == 0
        assert host.pending == 0
    assert stats.lag_refusals == 0
    assert stats.unserved_timeouts == {"primary": 0, "replica": 0}


async def test_pending_and_pool_timeouts(cluster, make_manager):
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1, "max_size": 1})
    pm.enable_acquire_stats()
    await pm.ready(masters_count=1, replicas_count=2)
    held = await pm.acquire_master()
    waiter = asyncio.ensure_future(pm.acquire_master(timeout=10))
    await wait_for(lambda: _stats(pm).hosts[0].pending == 1)
    await pm.release(held)
    conn = await waiter
    assert _stats(pm).hosts[0].pending == 0
    with pytest.raises(AcquireTimeoutError):
        await pm.acquire_master(timeout=0.05)
    await pm.release(conn)
    primary = _stats(pm).hosts[0]
    assert primary.timeouts == 1
    assert primary.pending == 0
    assert primary.wait_time.count == 2
    assert primary.use_time.count == 2


async def test_reads_refused_for_lag(cluster, make_manager):
    pm = make_manager(cluster, max_lag_bytes=10)
    pm.enable_acquire_stats()
    await pm.ready(masters_count=1, replicas_count=2)
    for standby in cluster.hosts[1:]:
        standby.stall_replay()
    cluster.write(1000)
    await wait_for(lambda: pm.replica_pool_count == 0)
    # Falls back to the primary: a refusal for lag, served.
    async with pm.acquire_replica(fallback_master=True):
        pass
    # Waits for a fresh replica until its deadline: one refusal, one unserved timeout.
    with pytest.raises(AcquireTimeoutError):
        await pm.acquire_replica(timeout=0.1)
    stats = _stats(pm)
    assert stats.lag_refusals == 2
    assert stats.unserved_timeouts == {"primary": 0, "replica": 1}
    assert stats.hosts[0].wait_time.count == 1


async def test_no_primary_is_an_unserved_timeout(make_manager):
    cluster = FakeCluster(3, primary=None)
    pm = make_manager(cluster)
    pm.enable_acquire_stats()
    await pm.ready(masters_count=0, replicas_count=3)
    with pytest.raises(AcquireTimeoutError):
        await pm.acquire_master(timeout=0.1)
    stats = _stats(pm)
    assert stats.unserved_timeouts == {"primary": 1, "replica": 0}
    assert stats.lag_refusals == 0


class _Lifecycle:
    """An observer that asks for acquire stats when the manager starts."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any, bool]] = []

    @hookimpl
    def hasql_manager_started(self, manager: Any) -> None:
        running = asyncio.get_running_loop() is not None
        self.events.append(("started", manager, running))
        manager.enable_acquire_stats()

    @hookimpl
    def hasql_manager_closed(self, manager: Any) -> None:
        self.events.append(("closed", manager, manager.closed))


async def test_started_and_closed_hooks():
    cluster = FakeCluster(3)
    observer = _Lifecycle()
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), observers=[observer])
    assert observer.events == [("started", pm, True)]
    await pm.ready(masters_count=1, replicas_count=2)
    async with pm.acquire_master():
        pass
    assert _stats(pm).hosts[0].wait_time.count == 1
    await pm.close()
    assert observer.events == [("started", pm, True), ("closed", pm, True)]


def test_started_hook_waits_for_the_first_use():
    cluster = FakeCluster(3)
    observer = _Lifecycle()
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), observers=[observer])
    assert observer.events == []  # no running loop yet: the monitor starts at the first use

    async def use() -> None:
        await pm.ready(masters_count=1, replicas_count=2)
        await pm.terminate()

    asyncio.run(use())
    assert [name for name, _, _ in observer.events] == ["started", "closed"]
