"""The driver inside hasql-core's PoolManager, on a real cluster: the README's example, a failover."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import DRIVER_NAME, eventually

from hasql_core import PoolManager

pytestmark = [pytest.mark.timeout(120), pytest.mark.hasql_cluster(replicas=1)]


async def test_readme_example(shared_cluster: Any) -> None:
    options = {"min_size": 1, "max_size": 5, "server_settings": {"application_name": "shop"}}
    pm = PoolManager(shared_cluster.dsn, driver=DRIVER_NAME, pool_factory_kwargs=options)
    try:
        await pm.ready(masters_count=1, replicas_count=1)
        async with pm.acquire_master() as conn:
            await conn.execute("CREATE TABLE IF NOT EXISTS hasql_readme (id int PRIMARY KEY)")
            await conn.execute("INSERT INTO hasql_readme VALUES (1) ON CONFLICT DO NOTHING")
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is False
            assert await conn.fetchval("SHOW application_name") == "shop"

        async def replica_count() -> Any:
            async with pm.acquire_replica() as conn:
                assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
                try:
                    return await conn.fetchval("SELECT count(*) FROM hasql_readme")
                except asyncpg.exceptions.UndefinedTableError:  # not replayed yet
                    return 0

        await eventually(replica_count, lambda count: count == 1)
        stats = [pm.driver.pool_stats(pool) for pool in pm.pools]
        assert all(s.in_use == 0 and s.max == 5 for s in stats), stats
    finally:
        await pm.close()
    assert options == {
        "min_size": 1,
        "max_size": 5,
        "server_settings": {"application_name": "shop"},
    }


async def test_failover_moves_writes_to_the_promoted_replica(hasql_cluster: Any) -> None:
    old_primary, replica = hasql_cluster.primary, hasql_cluster.replicas[0]
    pm = PoolManager(
        hasql_cluster.dsn,
        driver=DRIVER_NAME,
        refresh_delay=0.2,
        refresh_timeout=1.0,
        acquire_timeout=10,
        pool_factory_kwargs={"min_size": 1, "max_size": 2},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1)
        async with pm.acquire_master() as conn:
            assert await conn.fetchval("SELECT inet_server_port()") == old_primary.port

        await asyncio.to_thread(hasql_cluster.kill, old_primary)
        await asyncio.to_thread(hasql_cluster.promote, replica)

        async def master_port() -> Any:
            async with pm.acquire_master(timeout=5) as conn:
                return await conn.fetchval("SELECT inet_server_port()")

        await eventually(master_port, lambda port: port == replica.port, timeout=30)
        async with pm.acquire_master() as conn:
            await conn.execute("CREATE TABLE hasql_after_failover (id int)")
    finally:
        await pm.close()
