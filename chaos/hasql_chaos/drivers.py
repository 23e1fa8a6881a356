"""The drivers the matrix can run (those installed), and the SQL each one runs.

The schema is one table of writes: every write inserts a row with a unique id and returns the port
of the server that executed it (``inet_server_port()``: the server's own port, whatever proxy is in
between) and the row's ``clock_timestamp()``. Every read returns the server's port, whether it is
in recovery, its clock, the commit time of the last transaction it replayed and its replay
position: which host served the read and how far behind it was.
"""

from __future__ import annotations

import abc
import importlib
from typing import Any

#: Matrix columns in report order, and the modules each one needs (the library, its hasql plugin).
#: A column is a driver, and for ``asyncsqlalchemy`` also a dialect: ``asyncsqlalchemy`` runs
#: SQLAlchemy over asyncpg (``postgresql://``), ``asyncsqlalchemy+psycopg`` over psycopg
#: (``postgresql+psycopg://``). ``aiopg_sa`` needs SQLAlchemy 1.3/1.4 (aiopg.sa does not import
#: with 2.x), so it never shares an environment with ``asyncsqlalchemy``.
KNOWN: dict[str, tuple[str, ...]] = {
    "asyncpg": ("asyncpg", "hasql_asyncpg"),
    "psycopg3": ("psycopg", "psycopg_pool", "hasql_psycopg3"),
    "aiopg": ("aiopg", "psycopg2", "hasql_aiopg"),
    "aiopg_sa": ("aiopg.sa", "sqlalchemy", "hasql_aiopg"),
    "asyncsqlalchemy": ("sqlalchemy.ext.asyncio", "asyncpg", "hasql_sqlalchemy"),
    "asyncsqlalchemy+psycopg": ("sqlalchemy.ext.asyncio", "psycopg", "hasql_sqlalchemy"),
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
    """The columns whose modules (the library and its hasql plugin) import.

    Imported, not just found: aiopg.sa is on disk next to SQLAlchemy 2 too, but fails to import.
    """
    found = []
    for name, modules in KNOWN.items():
        try:
            for module in modules:
                importlib.import_module(module)
        except Exception:
            continue
        found.append(name)
    return found


class DriverSql(abc.ABC):
    """The statements of the workload on one driver's connections."""

    #: The matrix column.
    name: str
    #: The ``driver=`` given to the PoolManager (the column's name unless it names a dialect too).
    driver: str

    def dsn(self, dsn: str) -> str:
        """The manager's DSN, from the cluster's ``postgresql://`` one."""
        return dsn

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

    name = driver = "asyncpg"

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

    name = driver = "psycopg3"

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


def _libpq_port(raw: Any) -> int | None:
    """The port of a psycopg2 connection (``info.port``, no I/O)."""
    try:
        return int(raw.info.port)
    except Exception:
        return None


class AiopgSql(DriverSql):
    """aiopg: psycopg2 asynchronous connections, always autocommit; a cursor per statement."""

    name = driver = "aiopg"

    async def _fetchone(
        self, conn: Any, sql: str, params: tuple[Any, ...] | None
    ) -> tuple[Any, ...]:
        async with conn.cursor() as cursor:
            await cursor.execute(sql, params)
            row = await cursor.fetchone()
        return tuple(row)

    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """Cursor ``execute`` of the INSERT ... RETURNING, ``fetchone``."""
        return await self._fetchone(conn, _WRITE.format("%s", "%s"), (ident, writer))

    async def read(self, conn: Any) -> tuple[Any, ...]:
        """Cursor ``execute`` of the read, ``fetchone``."""
        return await self._fetchone(conn, READ_SQL, None)

    def peer_port(self, conn: Any) -> int | None:
        """The psycopg2 connection's ``info.port`` (``aiopg.Connection.raw``)."""
        return _libpq_port(getattr(conn, "raw", None))

    def pool_options(self, size: int) -> dict[str, Any]:
        """aiopg's names for the pool's bounds."""
        return {"minsize": size, "maxsize": size}


def _sa_row(row: Any) -> tuple[Any, ...]:
    """The values of an aiopg.sa ``RowProxy`` by position: it is a mapping by column name, and the
    read has two columns named ``extract``, which aiopg.sa refuses to look up by name."""
    return tuple(row[index] for index in range(len(row)))


class AiopgSaSql(AiopgSql):
    """aiopg.sa: ``SAConnection.execute`` of SQLAlchemy 1.x ``text()`` statements (autocommit)."""

    name = driver = "aiopg_sa"

    def __init__(self) -> None:
        import sqlalchemy  # only where aiopg_sa runs: SQLAlchemy 1.3/1.4

        self._write = sqlalchemy.text(_WRITE.format(":ident", ":writer"))
        self._read = sqlalchemy.text(READ_SQL)

    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """``SAConnection.execute`` of the INSERT ... RETURNING, ``first()`` of its result."""
        result = await conn.execute(self._write, ident=ident, writer=writer)
        return _sa_row(await result.first())

    async def read(self, conn: Any) -> tuple[Any, ...]:
        """``SAConnection.execute`` of the read, ``first()``."""
        result = await conn.execute(self._read)
        return _sa_row(await result.first())

    def peer_port(self, conn: Any) -> int | None:
        """The port of the aiopg connection under the ``SAConnection`` (``.connection.raw``)."""
        return _libpq_port(getattr(getattr(conn, "connection", None), "raw", None))


class SqlalchemySql(DriverSql):
    """SQLAlchemy 2 ``AsyncConnection`` over asyncpg: ``execute(text(...))``, then ``commit()``
    (SQLAlchemy begins a transaction with the first statement; committing inside the statement's
    bound leaves nothing for the release to roll back)."""

    name = driver = "asyncsqlalchemy"

    def __init__(self) -> None:
        import sqlalchemy

        self._write = sqlalchemy.text(_WRITE.format(":ident", ":writer"))
        self._read = sqlalchemy.text(READ_SQL)

    async def write(self, conn: Any, ident: int, writer: int) -> tuple[Any, ...]:
        """``execute`` of the INSERT ... RETURNING, ``one()``, ``commit()``."""
        result = await conn.execute(self._write, {"ident": ident, "writer": writer})
        row = tuple(result.one())
        await conn.commit()
        return row

    async def read(self, conn: Any) -> tuple[Any, ...]:
        """``execute`` of the read, ``one()``, ``commit()``."""
        result = await conn.execute(self._read)
        row = tuple(result.one())
        await conn.commit()
        return row

    def peer_port(self, conn: Any) -> int | None:
        """The port of the library's connection under the ``AsyncConnection`` (no I/O)."""
        try:
            raw = conn.sync_connection.connection.driver_connection
        except Exception:
            return None
        addr = getattr(raw, "_addr", None)  # asyncpg
        if isinstance(addr, tuple) and len(addr) >= 2:
            return int(addr[1])
        try:
            return int(raw.info.port)  # psycopg
        except Exception:
            return None

    def pool_options(self, size: int) -> dict[str, Any]:
        """``create_async_engine`` options: ``size`` connections (opened up front by the driver),
        no overflow."""
        return {"pool_size": size, "max_overflow": 0}


class SqlalchemyPsycopgSql(SqlalchemySql):
    """:class:`SqlalchemySql` with the psycopg dialect (``postgresql+psycopg://``)."""

    name = "asyncsqlalchemy+psycopg"
    driver = "asyncsqlalchemy"

    def dsn(self, dsn: str) -> str:
        """``postgresql+psycopg://`` instead of ``postgresql://``."""
        scheme, sep, rest = dsn.partition("://")
        if not sep or scheme not in ("postgresql", "postgres"):
            raise ValueError("expected a postgresql:// URL")
        return f"postgresql+psycopg://{rest}"


_SQL: dict[str, type[DriverSql]] = {
    "asyncpg": AsyncpgSql,
    "psycopg3": PsycopgSql,
    "aiopg": AiopgSql,
    "aiopg_sa": AiopgSaSql,
    "asyncsqlalchemy": SqlalchemySql,
    "asyncsqlalchemy+psycopg": SqlalchemyPsycopgSql,
}


def sql_for(driver: str) -> DriverSql:
    """The :class:`DriverSql` of the column ``driver``."""
    try:
        return _SQL[driver]()
    except KeyError:
        raise ValueError(f"unknown driver {driver!r}; known: {', '.join(KNOWN)}") from None


#: Qualified-name prefixes of the statements of every column (to recognise one in a task list).
STATEMENT_PREFIXES = tuple(f"{cls.__name__}." for cls in _SQL.values())
