"""The drivers the matrix can run (those installed), and the SQL each one runs.

The schema is one table of writes: every write inserts a row with a unique id and returns the port
of the server that executed it (``inet_server_port()``: the server's own port, whatever proxy is in
between) and the row's ``clock_timestamp()``. Every read returns the server's port, whether it is
in recovery, its clock, the commit time of the last transaction it replayed and its replay
position: which host served the read and how far behind it was.
"""

from __future__ import annotations

import abc
import importlib.util
from typing import Any

#: Driver names in report order, and the modules each one needs.
KNOWN: dict[str, tuple[str, ...]] = {
    "asyncpg": ("asyncpg", "hasql_asyncpg"),
    "psycopg3": ("psycopg", "psycopg_pool", "hasql_psycopg3"),
}

SCHEMA_SQL = (
    "CREATE TABLE chaos_writes ("
    "id bigint PRIMARY KEY, writer int NOT NULL, "
    "ts timestamptz NOT NULL DEFAULT clock_timestamp())"
)

_WRITE = (
    "INSERT INTO chaos_writes (id, writer) VALUES ({0}, {1}) "
    "RETURNING inet_server_port(), extract(epoch FROM ts)::float8"
)
READ_SQL = (
    "SELECT inet_server_port(), pg_is_in_recovery(), "
    "extract(epoch FROM clock_timestamp())::float8, "
    "extract(epoch FROM pg_last_xact_replay_timestamp())::float8, "
    "pg_last_wal_replay_lsn()::text"
)


def installed() -> list[str]:
    """The drivers whose modules (the library and its hasql plugin) can be imported."""
    return [
        name
        for name, modules in KNOWN.items()
        if all(importlib.util.find_spec(module) is not None for module in modules)
    ]


class DriverSql(abc.ABC):
    """The statements of the workload on one driver's connections."""

    name: str

    @abc.abstractmethod
    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """Insert row ``ident``; return (server port, insert time as epoch seconds)."""

    @abc.abstractmethod
    async def read(self, conn: Any) -> tuple[Any, ...]:
        """Run :data:`READ_SQL`; return its row."""

    @abc.abstractmethod
    def peer_port(self, conn: Any) -> int | None:
        """The port the connection was made to (the node's proxy), without I/O."""

    def pool_options(self, size: int) -> dict[str, Any]:
        """``pool_factory_kwargs`` for pools of ``size`` connections."""
        return {"min_size": size, "max_size": size}


class AsyncpgSql(DriverSql):
    """asyncpg: statements run in autocommit."""

    name = "asyncpg"

    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """``fetchrow`` of the INSERT ... RETURNING."""
        row = await conn.fetchrow(_WRITE.format("$1", "$2"), ident, writer)
        return tuple(row)

    async def read(self, conn: Any) -> tuple[Any, ...]:
        """``fetchrow`` of the read."""
        row = await conn.fetchrow(READ_SQL)
        return tuple(row)

    def peer_port(self, conn: Any) -> int | None:
        """From the connection's address (asyncpg keeps it as ``_addr``)."""
        addr = getattr(conn, "_addr", None)
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
        return None


class PsycopgSql(DriverSql):
    """psycopg 3 with autocommit connections (see :meth:`pool_options`)."""

    name = "psycopg3"

    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """``execute`` of the INSERT ... RETURNING, ``fetchone``."""
        cursor = await conn.execute(_WRITE.format("%s", "%s"), (ident, writer))
        row = await cursor.fetchone()
        return tuple(row)

    async def read(self, conn: Any) -> tuple[Any, ...]:
        """``execute`` of the read, ``fetchone``."""
        cursor = await conn.execute(READ_SQL)
        row = await cursor.fetchone()
        return tuple(row)

    def peer_port(self, conn: Any) -> int | None:
        """``conn.info.port``."""
        try:
            return int(conn.info.port)
        except Exception:
            return None

    def pool_options(self, size: int) -> dict[str, Any]:
        """Autocommit connections: nothing for psycopg_pool to roll back on return."""
        return {"min_size": size, "max_size": size, "kwargs": {"autocommit": True}}


def sql_for(driver: str) -> DriverSql:
    """The :class:`DriverSql` of ``driver``."""
    if driver == "asyncpg":
        return AsyncpgSql()
    if driver == "psycopg3":
        return PsycopgSql()
    raise ValueError(f"unknown driver {driver!r}; known: {', '.join(KNOWN)}")
