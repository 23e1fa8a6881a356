"""hasql 0.10's driver interface (``hasql.abc.PoolDriver``) over hasql-core's simulated hosts.

With it both managers can run over the very same :class:`~hasql_core.testing.fake_driver.FakeCluster`
(no network, no server), so the cost of each manager's own bookkeeping (per acquire, and per host
monitored) can be compared on 1000 hosts. Like hasql's real drivers it adds one connection to
``min_size`` and ``max_size`` for hasql's monitor, which takes that connection from the pool.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

from hasql.abc import PoolDriver
from hasql.metrics import PoolStats
from hasql.pool_manager import BasePoolManager

from hasql_core.testing.fake_driver import FakeCluster, FakeConnection, FakePool


class _FakeAcquire:
    """What ``acquire_from_pool`` returns: awaitable, and an async context manager."""

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: FakePool) -> None:
        self._pool = pool
        self._conn: FakeConnection | None = None

    def __await__(self) -> Generator[Any, None, FakeConnection]:
        return self._pool.acquire().__await__()

    async def __aenter__(self) -> FakeConnection:
        self._conn = await self._pool.acquire()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool.release(conn)


class FakeHasqlDriver(PoolDriver[FakePool, FakeConnection]):
    """hasql's driver contract over :class:`FakeCluster` hosts (role read on each check)."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def get_pool_freesize(self, pool: FakePool) -> int:
        """Idle connections plus unopened capacity (asyncpg's meaning in hasql)."""
        return len(pool.idle) + pool.max_size - pool.size

    def acquire_from_pool(
        self, pool: FakePool, *, timeout: float | None = None, **kwargs: Any
    ) -> Any:
        """An awaitable / async context manager taking a connection from ``pool``."""
        return _FakeAcquire(pool)

    async def release_to_pool(
        self, connection: FakeConnection, pool: FakePool, **kwargs: Any
    ) -> None:
        """Give ``connection`` back."""
        pool.release(connection)

    async def is_master(self, connection: FakeConnection) -> bool:
        """One simulated round trip; True for a writable primary."""
        await connection.host.answer()
        return connection.host.role == "primary" and not connection.host.read_only

    async def fetch_scalar(self, connection: FakeConnection, query: str) -> Any:
        """One simulated round trip returning nothing (staleness checks are not used here)."""
        await connection.host.answer()
        return None

    async def pool_factory(self, dsn: Any, **kwargs: Any) -> FakePool:
        """A pool for the simulated host named by ``dsn``, opened with ``min_size`` connections."""
        host, _, port = str(dsn.netloc).rpartition(":")
        pool = FakePool(
            self.cluster.host(host, int(port)),
            int(kwargs.get("min_size", 1)),
            int(kwargs.get("max_size", 10)),
        )
        for _ in range(pool.min_size):
            pool.idle.append(await pool.connect())
        return pool

    def prepare_pool_factory_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """+1 on both sizes, as hasql's asyncpg and psycopg3 drivers do."""
        return {
            **kwargs,
            "min_size": kwargs.get("min_size", 1) + 1,
            "max_size": kwargs.get("max_size", 10) + 1,
        }

    async def close_pool(self, pool: FakePool) -> None:
        """Close idle connections."""
        pool.close_all(include_in_use=False)

    async def terminate_pool(self, pool: FakePool) -> None:
        """Close every connection."""
        pool.close_all(include_in_use=True)

    def is_connection_closed(self, connection: FakeConnection) -> bool:
        """True once closed."""
        return connection.closed

    def host(self, pool: FakePool) -> str:
        """``host:port`` of the pool's simulated host."""
        return pool.host.name

    def pool_stats(self, pool: FakePool) -> PoolStats:
        """Sizes in hasql's terms."""
        return PoolStats(
            min=pool.min_size, max=pool.max_size, idle=len(pool.idle), used=len(pool.in_use)
        )


def fake_hasql_manager(cluster: FakeCluster, **kwargs: Any) -> BasePoolManager[Any, Any]:
    """A hasql 0.10 ``BasePoolManager`` over ``cluster`` (call inside a running event loop)."""
    return BasePoolManager(cluster.dsn, driver=FakeHasqlDriver(cluster), **kwargs)
