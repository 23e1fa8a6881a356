"""The asyncpgsa driver: SQLAlchemy core statements through connections it hands out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asyncpg_helpers import node_dsn

from hasql_core.driver import Driver

pytestmark = [pytest.mark.asyncpgsa_only, pytest.mark.timeout(120)]


async def test_sqlalchemy_core_statements_execute(
    driver: Driver[Any, Any, Any], shared_cluster: Any
) -> None:
    import asyncpg.pool
    import sqlalchemy as sa

    metadata = sa.MetaData()
    items = sa.Table(
        "hasql_sa_items",
        metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    pool = driver.create_pool(node_dsn(shared_cluster.primary), {"min_size": 1, "max_size": 2})
    await driver.open_pool(pool)
    try:
        conn = await driver.acquire(pool, None)
        try:
            assert isinstance(conn, asyncpg.pool.PoolConnectionProxy)
            await conn.execute("DROP TABLE IF EXISTS hasql_sa_items")
            await conn.execute(sa.schema.CreateTable(items))
            # asyncpgsa 0.27.1 cannot compile insert()/update() with SQLAlchemy 1.4 (it reads
            # the removed Insert.parameters): rows go in with SQL, as the README says.
            await conn.execute("INSERT INTO hasql_sa_items VALUES (1, 'one'), (2, 'two')")
            rows = await conn.fetch(
                sa.select(items.c.id, items.c.name).where(items.c.id > 1).order_by(items.c.id)
            )
            assert [(row["id"], row["name"]) for row in rows] == [(2, "two")]
            count = await conn.fetchval(sa.select(sa.func.count()).select_from(items))
            assert count == 2
            await conn.execute(items.delete().where(items.c.id == 2))
            # Plain SQL strings work as with asyncpg.
            assert await conn.fetchval("SELECT name FROM hasql_sa_items WHERE id = $1", 1) == "one"
            assert await conn.fetchval("SELECT count(*) FROM hasql_sa_items") == 1
            await conn.execute("DROP TABLE hasql_sa_items")
        finally:
            await driver.release(pool, conn)
    finally:
        await asyncio.wait_for(driver.close_pool(pool), 10)
