"""What hasql 0.9 / 0.10 users configured keeps working: staleness, metrics, custom policies,
exception names, pool-level helpers."""

from __future__ import annotations

import dataclasses
import datetime

import pytest

from hasql_core import ConfigurationError, PoolManager
from hasql_core.balancer_policy import AbstractBalancerPolicy
from hasql_core.exceptions import HasqlError, NoAvailablePoolError
from hasql_core.metrics import PoolRole, PoolStaleness
from hasql_core.staleness import (
    BaseStalenessChecker,
    BytesStalenessChecker,
    StalenessPolicy,
    TimeStalenessChecker,
)
from hasql_core.testing.fake_driver import FakeCluster

from .conftest import wait_for


async def _stall_standby(pm: PoolManager, cluster: FakeCluster, index: int) -> None:
    """Make standby ``index`` fall behind the primary and wait until the manager sees it stale."""
    cluster.write(1000)
    stalled = cluster.hosts[index]
    stalled.receive_lsn = cluster.hosts[0].wal_lsn
    stalled.stall_replay()
    pm.refresh(pm.host_states()[index].name)
    await wait_for(lambda: pm.host_states()[index].stale, timeout=5)


async def test_staleness_policy_means_max_lag_with_fallback_to_stale_replicas(make_manager):
    cluster = FakeCluster(2)  # one primary, one standby
    checker = TimeStalenessChecker(max_lag=datetime.timedelta(milliseconds=200))
    pm = make_manager(cluster, staleness=StalenessPolicy(checker), refresh_delay=30.0)
    await pm.ready(masters_count=1, replicas_count=1, timeout=5)
    await _stall_standby(pm, cluster, 1)
    # hasql 0.10's order: no fresh replica, no fallback_master -> the stale replica, not a wait.
    async with pm.acquire_replica(timeout=0.5) as conn:
        assert conn.host is cluster.hosts[1]
    # With fallback_master, the primary comes before the stale replica.
    async with pm.acquire_replica(fallback_master=True) as conn:
        assert conn.host is cluster.hosts[0]
    metrics = pm.metrics()
    assert metrics.gauges.stale_count == 1 and metrics.gauges.replica_count == 0
    replica = next(p for p in metrics.pools if p.host == "db1:5432")
    assert replica.role is PoolRole.REPLICA and replica.staleness is PoolStaleness.STALE
    # Marked stale when it could cross the limit (the monitor's timer), with the lag last measured.
    assert replica.lag["bytes"] > 0 and isinstance(replica.lag["time"], datetime.timedelta)


async def test_without_stale_fallback_a_stale_replica_is_never_used(make_manager):
    cluster = FakeCluster(2)
    pm = make_manager(cluster, max_lag=0.2, refresh_delay=30.0)
    await pm.ready(masters_count=1, replicas_count=1, timeout=5)
    await _stall_standby(pm, cluster, 1)
    with pytest.raises(NoAvailablePoolError, match="beyond lag limit"):
        await pm.acquire_replica(timeout=0.3)


async def test_bytes_checker_maps_to_max_lag_bytes(make_manager):
    cluster = FakeCluster(2)
    policy = StalenessPolicy(BytesStalenessChecker(max_lag_bytes=4096))
    pm = make_manager(cluster, staleness=policy)
    await pm.ready(masters_count=1, replicas_count=1, timeout=5)
    cluster.write(4096)  # the standby does not replay it: 4096 bytes behind, at the limit
    for _ in range(2):  # the primary's new position and the standby's lag, both probed after it
        await pm.wait_next_pool_check(timeout=5)
    assert pm.host_states()[1].lag_bytes == 4096 and not pm.host_states()[1].stale
    cluster.write(1)
    await wait_for(lambda: pm.host_states()[1].stale, timeout=5)


@pytest.mark.parametrize(
    ("staleness", "message"),
    [
        (
            StalenessPolicy(
                TimeStalenessChecker(datetime.timedelta(seconds=1)),
                grace_period=datetime.timedelta(seconds=5),
            ),
            r"grace_period=\.\.\.\) has no counterpart",
        ),
        (StalenessPolicy(type("Mine", (BaseStalenessChecker,), {})()), "Use max_lag="),
        ("1s", "must be a StalenessPolicy"),
    ],
)
def test_staleness_settings_without_counterpart_are_refused(staleness, message):
    from hasql_core.testing.fake_driver import FakeDriver

    cluster = FakeCluster(2)
    with pytest.raises(ConfigurationError, match=message):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), staleness=staleness)
    with pytest.raises(ConfigurationError, match="say the same thing"):
        PoolManager(
            cluster.dsn,
            driver=FakeDriver(cluster),
            max_lag=1,
            staleness=StalenessPolicy(TimeStalenessChecker(datetime.timedelta(seconds=1))),
        )


async def test_metrics_read_like_hasql_0_10_and_serialise_with_asdict(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    async with pm.acquire_master() as conn:
        inside = pm.metrics()
        await conn.execute("INSERT 1")
    async with pm.acquire_replica():
        pass
    metrics = pm.metrics()
    as_dict = dataclasses.asdict(metrics)
    assert set(as_dict) >= {"pools", "hasql", "gauges"}
    assert metrics.hasql.pool == 2  # counted per acquire, as hasql does
    assert metrics.gauges.master_count == 1 and metrics.gauges.replica_count == 2
    assert metrics.gauges.active_connections == 0 and inside.gauges.active_connections == 1
    primary = next(p for p in inside.pools if p.role is PoolRole.MASTER)
    assert primary.host == "db0:5432" and primary.in_flight == 1 and primary.healthy
    assert [d.host for d in metrics.drivers] == ["db0:5432", "db1:5432", "db2:5432"]


async def test_hasql_pool_helpers(cluster, make_manager):
    pm = make_manager(cluster, stopwatch_window_size=4)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    pool = (await pm.get_master_pools())[0]
    assert pm.host(pool) == "db0:5432"
    await pm.wait_next_pool_check()
    median = pm.get_last_response_time(pool)
    assert median is not None and median == pm.metrics().hosts[0].response_time
    assert pm.pool_stats(pool).max == 10
    assert pm.stale_pool_count == 0 and pm.get_stale_pools() == []


async def test_master_pool_count_counts_every_host_claiming_primary(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[1].promote()  # now two hosts say primary
    await pm.ready(masters_count=2, replicas_count=1, timeout=5)
    assert pm.master_pool_count == 2


class PrimaryOrFirstReplica(AbstractBalancerPolicy):
    """A policy written the hasql way: async, reaching pools through self._pool_state."""

    async def _get_pool(self, read_only, fallback_master=False, choose_master_as_replica=False):
        candidates = await self._get_candidates(
            read_only, fallback_master, choose_master_as_replica
        )
        return candidates[0] if candidates else None


class NeverAPool(AbstractBalancerPolicy):
    async def _get_pool(self, read_only, fallback_master=False, choose_master_as_replica=False):
        return None


async def test_hasql_style_policy_routes_reads_and_writes(cluster, make_manager):
    pm = make_manager(cluster, balancer_policy=PrimaryOrFirstReplica)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    async with pm.acquire_master() as conn:
        assert await conn.execute("INSERT 1") == "db0:5432"
    async with pm.acquire_replica() as conn:
        assert await conn.execute("SELECT 1") == "db1:5432"


async def test_hasql_style_policy_returning_none_raises_no_available_pool(cluster, make_manager):
    pm = make_manager(cluster, balancer_policy=NeverAPool)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    with pytest.raises(NoAvailablePoolError, match="NeverAPool returned no pool") as info:
        await pm.acquire_master()
    assert isinstance(info.value, HasqlError)


def test_abstract_hasql_policy_is_refused_with_how_to_port():
    from hasql_core.testing.fake_driver import FakeDriver

    cluster = FakeCluster(2)
    with pytest.raises(ConfigurationError, match="implement async def _get_pool"):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), balancer_policy=AbstractBalancerPolicy)


def test_timeout_errors_are_no_available_pool_errors_too():
    from hasql_core import AcquireTimeoutError

    assert issubclass(AcquireTimeoutError, NoAvailablePoolError)
