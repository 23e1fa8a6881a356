"""A program written for hasql 0.10, with only its import lines changed and ``driver=`` added, runs
against a real local cluster and behaves as it did on hasql: staleness with fallback to a stale
replica, ``metrics()`` read and serialised with ``asdict``, ``host(pool)``, a custom policy written
the hasql way, and ``hasql.exceptions`` names."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest
from asyncpg_helpers import DRIVER_NAME

# hasql 0.10:  from hasql.asyncpg import PoolManager
from hasql_core import PoolManager

# hasql 0.10:  from hasql.balancer_policy import AbstractBalancerPolicy
from hasql_core.balancer_policy import AbstractBalancerPolicy

# hasql 0.10:  from hasql.exceptions import NoAvailablePoolError
from hasql_core.exceptions import NoAvailablePoolError

# hasql 0.10:  from hasql.metrics import PoolRole, PoolStaleness
from hasql_core.metrics import PoolRole, PoolStaleness

# hasql 0.10:  from hasql.staleness import StalenessPolicy, TimeStalenessChecker
from hasql_core.staleness import StalenessPolicy, TimeStalenessChecker

pytestmark = [pytest.mark.timeout(180), pytest.mark.hasql_cluster(replicas=1)]


class LeastBusy(AbstractBalancerPolicy):
    """A custom policy as hasql 0.10's docs show: candidates from the pool state, pick by free size."""

    async def _get_pool(
        self, read_only: bool, fallback_master: bool = False, choose_master_as_replica: bool = False
    ) -> Any:
        candidates = await self._get_candidates(
            read_only, fallback_master, choose_master_as_replica
        )
        if not candidates:
            return None
        return max(candidates, key=self._pool_state.get_pool_freesize)


async def _server_port(pm: PoolManager, read_only: bool, **kwargs: Any) -> int:
    async with pm.acquire(read_only=read_only, **kwargs) as conn:
        return int(await asyncio.wait_for(conn.fetchval("SELECT inet_server_port()"), 5))


async def test_hasql_0_10_program(hasql_cluster: Any) -> None:
    cluster = hasql_cluster
    primary_port, replica_port = cluster.primary.port, cluster.replicas[0].port
    pm = PoolManager(
        cluster.dsn,
        driver=DRIVER_NAME,  # the one line added
        acquire_timeout=5,
        refresh_delay=0.2,
        balancer_policy=LeastBusy,
        staleness=StalenessPolicy(TimeStalenessChecker(max_lag=timedelta(seconds=1))),
        pool_factory_kwargs={"min_size": 1, "max_size": 3},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=20)
        async with pm.acquire_master() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS moves (id serial PRIMARY KEY)")
        assert await _server_port(pm, read_only=False) == primary_port
        assert await _server_port(pm, read_only=True) == replica_port

        metrics = pm.metrics()
        json.dumps(dataclasses.asdict(metrics), default=str)  # hasql 0.10's docs do this
        roles = {p.host: p.role for p in metrics.pools}
        master_pool = next(p for p in pm.pools if pm.pool_is_master(p))
        assert roles[pm.host(master_pool)] is PoolRole.MASTER
        assert metrics.gauges.master_count == 1 and metrics.gauges.replica_count == 1
        assert metrics.hasql.pool >= 2  # counted per acquire

        # The replica falls behind: beyond max_lag it is stale, and hasql 0.10's order applies:
        # with fallback_master the primary serves, without it the stale replica still does.
        cluster.pause_replay(cluster.replicas[0])
        async with pm.acquire_master() as conn:
            await conn.execute("INSERT INTO moves DEFAULT VALUES")

        async def replica_is_stale() -> bool:
            return any(p.staleness is PoolStaleness.STALE for p in pm.metrics().pools)

        for _ in range(200):
            if await replica_is_stale():
                break
            await pm.wait_next_pool_check(timeout=5)
        assert await replica_is_stale()
        assert await _server_port(pm, read_only=True, fallback_master=True) == primary_port
        assert await _server_port(pm, read_only=True) == replica_port
        cluster.resume_replay(cluster.replicas[0])
    finally:
        await pm.close()


class Nobody(AbstractBalancerPolicy):
    async def _get_pool(
        self, read_only: bool, fallback_master: bool = False, choose_master_as_replica: bool = False
    ) -> Any:
        return None


async def test_no_available_pool_error_as_in_hasql(hasql_cluster: Any) -> None:
    pm = PoolManager(hasql_cluster.dsn, driver=DRIVER_NAME, balancer_policy=Nobody)
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=20)
        with pytest.raises(NoAvailablePoolError):
            await pm.acquire_master()
    finally:
        await pm.close()
