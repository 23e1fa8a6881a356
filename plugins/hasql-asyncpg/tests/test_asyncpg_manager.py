"""The README's asyncpg example inside hasql-core's PoolManager, on a real cluster.

Manager-level scenarios (failover, frozen hosts, lag, ...) are in hasql-core's conformance suite
(test_conformance.py).
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import DRIVER_NAME, eventually

from hasql_core import PoolManager

pytestmark = pytest.mark.timeout(120)


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

        async def pool_stats() -> Any:
            return [pm.driver.pool_stats(pool) for pool in pm.pools]

        # The last release's reset query finishes after the block was left (in the background).
        await eventually(pool_stats, lambda stats: all(s.in_use == 0 for s in stats))
        stats = await pool_stats()
        assert all(s.max == 5 for s in stats), stats
    finally:
        await pm.close()
    assert options == {
        "min_size": 1,
        "max_size": 5,
        "server_settings": {"application_name": "shop"},
    }
