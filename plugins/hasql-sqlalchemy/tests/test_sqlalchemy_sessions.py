"""ORM sessions routed by role: the write session on the primary, the read-only session on a
replica refusing writes before they reach the server, and the FastAPI-style dependency."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from hasql_sqlalchemy import (
    ReadOnlySessionError,
    RoutedAsyncSession,
    async_sessionmaker,
    is_write_statement,
)
from sqlalchemy import String, delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy_helpers import DRIVER_NAME, dialect_dsn

from hasql_core import PoolManager
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "session_item"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


@pytest.fixture
async def pm(shared_cluster: LocalCluster, dialect: str) -> AsyncIterator[PoolManager]:
    dsn = dialect_dsn(shared_cluster.dsn, dialect)
    manager = PoolManager(dsn, driver=DRIVER_NAME, pool_factory_kwargs={"pool_size": 2})
    await manager.ready(masters_count=1, replicas_count=1, timeout=15)
    async with manager.acquire_master() as conn:
        await conn.run_sync(Base.metadata.create_all)
        await conn.commit()
    yield manager
    await manager.close()


def _in_use(pm: PoolManager) -> int:
    return sum(pm.driver.pool_stats(pool).in_use for pool in pm.pools)


async def _port(session: AsyncSession) -> int:
    return int((await session.execute(text("SELECT inet_server_port()"))).scalar_one())


async def test_sessions_are_routed_by_role(pm: PoolManager, shared_cluster: LocalCluster) -> None:
    Session = async_sessionmaker(pm, expire_on_commit=False)
    ReadSession = async_sessionmaker(pm, read_only=True)
    async with Session() as session, session.begin():
        assert await _port(session) == shared_cluster.primary.port
        session.add(Item(name="routed"))
        assert _in_use(pm) == 1
    assert _in_use(pm) == 0
    await asyncio.to_thread(shared_cluster.wait_replayed)
    async with ReadSession() as session:
        assert isinstance(session, RoutedAsyncSession) and session.read_only
        assert await _port(session) == shared_cluster.replicas[0].port
        names = (await session.scalars(select(Item.name))).all()
        assert "routed" in names
        read_only = await session.execute(text("SELECT current_setting('transaction_read_only')"))
        assert read_only.scalar() == "on"  # a read-only transaction on the server too
    assert _in_use(pm) == 0


async def test_read_only_session_refuses_writes_before_the_server(pm: PoolManager) -> None:
    """Each refusal is ReadOnlySessionError, not the replica's 25006: the write never reached it."""
    ReadSession = async_sessionmaker(pm, read_only=True)
    async with ReadSession() as session:
        session.add(Item(name="nope"))
        with pytest.raises(ReadOnlySessionError, match="1 new"):
            await session.flush()
        session.expunge_all()
        statements: list[Any] = [
            insert(Item).values(name="x"),
            update(Item).values(name="y"),
            delete(Item),
            text("INSERT INTO session_item (name) VALUES ('z')"),
            text("/* hint */ with w as (delete from session_item returning 1) select * from w"),
            text("CREATE TABLE nope (x int)"),
        ]
        for statement in statements:
            with pytest.raises(ReadOnlySessionError):
                await session.execute(statement)
        assert (await session.execute(text("SELECT 1"))).scalar() == 1  # still usable
        item = (await session.scalars(select(Item).limit(1))).first()
        if item is not None:
            item.name = "changed"
            with pytest.raises(ReadOnlySessionError, match="1 changed"):
                await session.commit()
    assert _in_use(pm) == 0


async def test_write_session_writes_and_server_refusal_is_not_ours(pm: PoolManager) -> None:
    """A write session is not checked on the client; writes that reach a standby anyway (a read
    session's function call) are refused by the server as usual."""
    Session = async_sessionmaker(pm)
    async with Session() as session:
        await session.execute(insert(Item).values(name="written"))
        await session.commit()
    ReadSession = async_sessionmaker(pm, read_only=True)
    async with ReadSession() as session:
        with pytest.raises(DBAPIError) as info:
            await session.execute(text("SELECT nextval('session_item_id_seq')"))
        assert pm.driver.error_facts(info.value).sqlstate == "25006"


async def test_awaited_session_holds_its_connection_until_closed(pm: PoolManager) -> None:
    maker = async_sessionmaker(pm, read_only=True)
    session = await maker()
    assert _in_use(pm) == 1
    await session.execute(text("SELECT 1"))
    await session.close()
    assert _in_use(pm) == 0
    await session.close()  # twice: nothing more to give back


async def test_fastapi_style_dependency_one_session_per_request(pm: PoolManager) -> None:
    """The README's dependency, driven the way FastAPI drives a generator dependency."""
    ReadSession = async_sessionmaker(pm, read_only=True)

    async def read_session() -> AsyncGenerator[AsyncSession, None]:
        async with ReadSession() as session:
            yield session

    async def handler(session: AsyncSession) -> list[Any]:
        return list((await session.execute(select(Item.id).limit(3))).scalars())

    for _ in range(3):  # three requests
        dependency = read_session()
        session = await anext(dependency)
        assert _in_use(pm) == 1
        await handler(session)
        with pytest.raises(StopAsyncIteration):
            await anext(dependency)
        assert _in_use(pm) == 0
    dependency = read_session()  # a request whose handler fails
    session = await anext(dependency)
    with pytest.raises(ZeroDivisionError):
        await dependency.athrow(ZeroDivisionError())
    assert _in_use(pm) == 0


def test_is_write_statement() -> None:
    assert is_write_statement("insert into t values (1)")
    assert is_write_statement("  -- note\n UPDATE t SET x = 1")
    assert is_write_statement("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d")
    assert is_write_statement("truncate t")
    assert not is_write_statement("SELECT 'insert into t' AS q")
    assert not is_write_statement('SELECT "update" FROM t')
    assert not is_write_statement("SELECT $$delete$$")
    assert not is_write_statement("WITH x AS (SELECT 1) SELECT * FROM x")
    assert not is_write_statement("")


def test_maker_refuses_bind() -> None:
    with pytest.raises(TypeError):
        async_sessionmaker(object(), bind=object())  # type: ignore[arg-type]
