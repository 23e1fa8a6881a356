"""The clients under test behind one interface, and the SQL each driver runs.

Three kinds of client, each for asyncpg and for psycopg 3:

- ``raw``: one pool per host made directly with the driver (``asyncpg.create_pool``,
  ``psycopg_pool.AsyncConnectionPool``); writes go to the primary's pool, reads round-robin over the
  replicas' pools. It knows the roles because the benchmark tells it: it is the floor, not a router.
- ``hasql 0.10``: ``hasql.asyncpg.PoolManager`` / ``hasql.psycopg3.PoolManager`` from PyPI.
- ``hasql-core``: ``hasql_core.PoolManager(dsn, driver=...)``.

Every client gets pools of ``min_size = max_size = 10`` per host (see :func:`pool_options`) and
hands out the driver's own connections; release is the driver's default everywhere (asyncpg runs
its reset query; psycopg_pool checks the connection's state, autocommit here), so every client of a
driver does the same work per operation.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime
import importlib
import itertools
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import asyncpg
import psycopg
import psycopg_pool

from hasql_core import PoolManager

from .common import CORE, HASQL, POOL_SIZE, RAW

__all__ = [
    "CORE_DEFAULTS",
    "HASQL_DEFAULTS",
    "POOL_OPTIONS",
    "Client",
    "CoreClient",
    "HasqlClient",
    "RawClient",
    "Sql",
    "Target",
    "pool_options",
    "sql_for",
]

POOL_OPTIONS: dict[str, Any] = {"min_size": POOL_SIZE, "max_size": POOL_SIZE}


def pool_options(driver: str) -> dict[str, Any]:
    """The pool options every client of ``driver`` gets (a new dict each time).

    psycopg connections are made autocommit: a statement outside a transaction leaves nothing for
    psycopg_pool to roll back (and log a warning about) when the connection comes back, which is
    how psycopg's documentation asks for pooled connections to be returned. asyncpg is
    autocommit anyway; its pool runs its reset query on release, for every client alike.
    """
    options = dict(POOL_OPTIONS)
    if driver == "psycopg3":
        options["kwargs"] = {"autocommit": True}
    return options


#: hasql 0.10's defaults (hasql/constants.py) and hasql-core's, as the settings table states them.
HASQL_DEFAULTS: dict[str, Any] = {
    "refresh_delay": 1.0,
    "refresh_timeout": 30.0,
    "acquire_timeout": 1.0,
    "balancer": "greedy",
}
CORE_DEFAULTS: dict[str, Any] = {
    "refresh_delay": 1.0,
    "refresh_timeout": 2.0,
    "acquire_timeout": 1.0,
    "fast_refresh_delay": 0.05,
    "balancer": "greedy",
}


@dataclasses.dataclass(frozen=True)
class Target:
    """Where the cluster is: credentials, the multi-host DSN and which port has which role."""

    dsn: str
    user: str
    password: str
    database: str
    primary: int
    replicas: tuple[int, ...]

    @classmethod
    def of(cls, cluster: Any) -> Target:
        """The target of a started :class:`~hasql_core.testing.cluster.LocalCluster`."""
        return cls(
            dsn=cluster.dsn,
            user=cluster.user,
            password=cluster.password,
            database=cluster.database,
            primary=cluster.primary.port,
            replicas=tuple(node.port for node in cluster.replicas),
        )


# -- SQL per driver ---------------------------------------------------------------------------------


class Sql(abc.ABC):
    """The statements a scenario runs on a handed-out connection, for one driver."""

    @abc.abstractmethod
    async def select_one(self, conn: Any) -> None:
        """``SELECT 1`` and read its row."""

    @abc.abstractmethod
    async def write(self, conn: Any, sql: str) -> None:
        """Run a write statement and make it durable (commit where the driver is transactional)."""

    @abc.abstractmethod
    async def fetch_value(self, conn: Any, sql: str) -> Any:
        """Run a query and return the first column of its first row."""

    @abc.abstractmethod
    def port(self, conn: Any) -> int | None:
        """The server port ``conn`` is connected to, without I/O (None if unknown)."""


class AsyncpgSql(Sql):
    """asyncpg: every statement runs in autocommit."""

    async def select_one(self, conn: Any) -> None:
        """``fetchval('SELECT 1')``."""
        await conn.fetchval("SELECT 1")

    async def write(self, conn: Any, sql: str) -> None:
        """``execute(sql)`` (autocommit)."""
        await conn.execute(sql)

    async def fetch_value(self, conn: Any, sql: str) -> Any:
        """``fetchval(sql)``."""
        return await conn.fetchval(sql)

    def port(self, conn: Any) -> int | None:
        """From the connection's peer address (asyncpg keeps it as ``_addr``; a pool proxy
        forwards attribute reads to its connection)."""
        addr = getattr(conn, "_addr", None)
        return int(addr[1]) if isinstance(addr, tuple) and len(addr) >= 2 else None


class PsycopgSql(Sql):
    """psycopg 3 (the benchmark's pools make autocommit connections, see :func:`pool_options`)."""

    async def select_one(self, conn: Any) -> None:
        """``execute('SELECT 1')`` and ``fetchone()``."""
        cursor = await conn.execute("SELECT 1")
        await cursor.fetchone()

    async def write(self, conn: Any, sql: str) -> None:
        """``execute(sql)`` (autocommit)."""
        await conn.execute(sql)

    async def fetch_value(self, conn: Any, sql: str) -> Any:
        """``execute(sql)``, ``fetchone()[0]``."""
        cursor = await conn.execute(sql)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    def port(self, conn: Any) -> int | None:
        """``conn.info.port``."""
        try:
            return int(conn.info.port)
        except (psycopg.Error, AttributeError, TypeError, ValueError):
            return None


def sql_for(driver: str) -> Sql:
    """The :class:`Sql` of ``driver`` (``asyncpg`` or ``psycopg3``)."""
    return AsyncpgSql() if driver == "asyncpg" else PsycopgSql()


# -- clients ----------------------------------------------------------------------------------------


class Client(abc.ABC):
    """One client under test: open it, take connections by role, close it."""

    kind: str = ""

    def __init__(self, driver: str, variant: str = "", **options: Any) -> None:
        self.driver = driver
        self.variant = variant
        self.options = options

    @property
    def label(self) -> str:
        """The client's name in tables and charts, e.g. ``hasql 0.10 (staleness 1 s)``."""
        return f"{self.kind} ({self.variant})" if self.variant else self.kind

    @abc.abstractmethod
    async def open(self, target: Target) -> None:
        """Create the pools (and the manager) and wait until a primary and both replicas serve."""

    @abc.abstractmethod
    def master(self) -> AbstractAsyncContextManager[Any]:
        """``async with client.master() as conn``: a connection to the primary."""

    @abc.abstractmethod
    def replica(self) -> AbstractAsyncContextManager[Any]:
        """``async with client.replica() as conn``: a connection to a replica."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Close gracefully."""

    async def terminate(self) -> None:
        """Close at once (defaults to :meth:`close`)."""
        await self.close()

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """Every setting that shapes the results, for the report."""


class _PsycopgLease:
    """``getconn()`` on enter and ``putconn()`` on exit: what both managers do with psycopg_pool.

    (``pool.connection()`` would also commit on exit, a different amount of work.)
    """

    __slots__ = ("_conn", "_pool")

    def __init__(self, pool: psycopg_pool.AsyncConnectionPool[Any]) -> None:
        self._pool = pool
        self._conn: Any = None

    async def __aenter__(self) -> Any:
        self._conn = await self._pool.getconn()
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        conn, self._conn = self._conn, None
        await self._pool.putconn(conn)


class RawClient(Client):
    """The driver's own pools, one per host; the roles come from the benchmark."""

    kind = RAW

    def __init__(self, driver: str) -> None:
        super().__init__(driver)
        self._pools: dict[int, Any] = {}
        self._primary: Any = None
        self._replicas: Iterator[Any] = iter(())

    async def open(self, target: Target) -> None:
        """One pool per host, opened with ``min_size`` connections."""
        for port in (target.primary, *target.replicas):
            if self.driver == "asyncpg":
                pool: Any = await asyncpg.create_pool(
                    host="127.0.0.1",
                    port=port,
                    user=target.user,
                    password=target.password,
                    database=target.database,
                    **pool_options(self.driver),
                )
            else:
                pool = psycopg_pool.AsyncConnectionPool(
                    psycopg.conninfo.make_conninfo(
                        host="127.0.0.1",
                        port=port,
                        user=target.user,
                        password=target.password,
                        dbname=target.database,
                    ),
                    open=False,
                    **pool_options(self.driver),
                )
                await pool.open()
                await pool.wait()
            self._pools[port] = pool
        self._primary = self._pools[target.primary]
        self._replicas = itertools.cycle([self._pools[p] for p in target.replicas])

    def master(self) -> AbstractAsyncContextManager[Any]:
        """The primary's pool."""
        return self._lease(self._primary)

    def replica(self) -> AbstractAsyncContextManager[Any]:
        """The replicas' pools in turn."""
        return self._lease(next(self._replicas))

    def _lease(self, pool: Any) -> AbstractAsyncContextManager[Any]:
        if self.driver == "asyncpg":
            lease: AbstractAsyncContextManager[Any] = pool.acquire()
            return lease
        return _PsycopgLease(pool)

    async def close(self) -> None:
        """Close every pool."""
        for pool in self._pools.values():
            await pool.close()
        self._pools.clear()

    def settings(self) -> dict[str, Any]:
        """Pool size, no timeouts, default reset."""
        return {
            "pool": f"{pool_options(self.driver)} per host",
            "acquire": "pool.acquire() (no timeout)"
            if self.driver == "asyncpg"
            else "pool.getconn() / pool.putconn() (pool default timeout)",
            "replica choice": "round robin",
        }


class HasqlClient(Client):
    """hasql 0.10 from PyPI with its defaults (``variant`` names a non-default option)."""

    kind = HASQL

    def __init__(self, driver: str, variant: str = "", **options: Any) -> None:
        super().__init__(driver, variant, **options)
        self.pm: Any = None

    async def open(self, target: Target) -> None:
        """``PoolManager(dsn, pool_factory_kwargs=..., **options)`` and ``ready(1, 2)``."""
        module: Any = importlib.import_module(
            "hasql.asyncpg" if self.driver == "asyncpg" else "hasql.psycopg3"
        )
        self.pm = module.PoolManager(
            target.dsn, pool_factory_kwargs=pool_options(self.driver), **self.options
        )
        await self.pm.ready(masters_count=1, replicas_count=len(target.replicas), timeout=30)

    def master(self) -> AbstractAsyncContextManager[Any]:
        """``pm.acquire_master()``."""
        ctx: AbstractAsyncContextManager[Any] = self.pm.acquire_master()
        return ctx

    def replica(self) -> AbstractAsyncContextManager[Any]:
        """``pm.acquire_replica()``."""
        ctx: AbstractAsyncContextManager[Any] = self.pm.acquire_replica()
        return ctx

    async def close(self) -> None:
        """``pm.close()``."""
        if self.pm is not None:
            await self.pm.close()

    async def terminate(self) -> None:
        """``pm.terminate()`` (a no-op for hasql's psycopg3 pools, so close those too)."""
        if self.pm is None:
            return
        await self.pm.terminate()
        if self.driver == "psycopg3":
            for pool in self.pm._pool_state.pools:  # hasql's terminate leaves them open
                if pool is not None:
                    await pool.close(timeout=0.5)

    def settings(self) -> dict[str, Any]:
        """hasql's defaults plus whatever this variant sets."""
        settings: dict[str, Any] = dict(HASQL_DEFAULTS)
        settings["pool"] = (
            f"pool_factory_kwargs={pool_options(self.driver)} "
            "(hasql adds 1 to both sizes for its monitor connection)"
        )
        for key, value in self.options.items():
            settings[key] = describe_option(value)
        return settings


class CoreClient(Client):
    """hasql-core with its defaults (``variant`` names a non-default option)."""

    kind = CORE

    def __init__(self, driver: str, variant: str = "", **options: Any) -> None:
        super().__init__(driver, variant, **options)
        self.pm: PoolManager | None = None

    async def open(self, target: Target) -> None:
        """``PoolManager(dsn, driver=..., pool_factory_kwargs=..., **options)``, ``ready(1, 2)``."""
        self.pm = PoolManager(
            target.dsn,
            driver=self.driver,
            pool_factory_kwargs=pool_options(self.driver),
            **self.options,
        )
        await self.pm.ready(masters_count=1, replicas_count=len(target.replicas), timeout=30)

    def master(self) -> AbstractAsyncContextManager[Any]:
        """``pm.acquire_master()``."""
        assert self.pm is not None
        return self.pm.acquire_master()

    def replica(self) -> AbstractAsyncContextManager[Any]:
        """``pm.acquire_replica()``."""
        assert self.pm is not None
        return self.pm.acquire_replica()

    async def close(self) -> None:
        """``pm.close()``."""
        if self.pm is not None:
            await self.pm.close()

    async def terminate(self) -> None:
        """``pm.terminate()``."""
        if self.pm is not None:
            await self.pm.terminate()

    def settings(self) -> dict[str, Any]:
        """hasql-core's defaults plus whatever this variant sets."""
        settings: dict[str, Any] = dict(CORE_DEFAULTS)
        settings["pool"] = f"pool_factory_kwargs={pool_options(self.driver)} (used as given)"
        settings["monitor connection"] = "one dedicated connection per host, outside the pool"
        for key, value in self.options.items():
            settings[key] = describe_option(value)
        return settings


def describe_option(value: Any) -> Any:
    """A JSON-friendly description of a client option (e.g. hasql's staleness policy)."""
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if isinstance(value, datetime.timedelta):
        return f"{value.total_seconds():g} s"
    checker = getattr(value, "_checker", None)
    if checker is not None:
        limit = getattr(checker, "_max_lag", None) or getattr(checker, "_max_lag_bytes", None)
        grace = getattr(value, "_grace_period", None)
        return (
            f"StalenessPolicy({type(checker).__name__}({describe_option(limit)}), "
            f"grace_period={describe_option(grace)})"
        )
    return repr(value)
