"""Shared helpers of the hasql-sqlalchemy tests: the driver under test, per dialect.

``HASQL_TEST_DRIVER`` names the nox environment (``sqlalchemy``: newest SQLAlchemy 2.x;
``sqlalchemy20``: the 2.0 series). The first runs the tests through the driver's alias
``sqlalchemy``, the second through its hasql name ``asyncsqlalchemy``, so both names are
exercised. Every database test runs once per dialect (asyncpg and psycopg).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from hasql_sqlalchemy import AsyncSqlalchemyDriver
from sqlalchemy import text

_ENV = os.environ.get("HASQL_TEST_DRIVER", "sqlalchemy")
#: The driver name the tests resolve through the ``hasql`` entry points.
DRIVER_NAME = "asyncsqlalchemy" if _ENV in ("sqlalchemy20", "asyncsqlalchemy") else "sqlalchemy"
DIALECTS = ("asyncpg", "psycopg")


class PsycopgByDefaultDriver(AsyncSqlalchemyDriver):
    """The driver with psycopg as the dialect of ``postgresql://`` DSNs: how the shared suites,
    which write plain ``postgresql://`` DSNs, run the psycopg dialect."""

    default_dialect: ClassVar[str] = "psycopg"


def driver_for(dialect: str) -> Any:
    """What to pass as ``PoolManager(driver=...)`` so plain DSNs use ``dialect``."""
    return DRIVER_NAME if dialect == "asyncpg" else PsycopgByDefaultDriver


def dialect_dsn(dsn: str, dialect: str) -> str:
    """``dsn`` (a ``postgresql://`` URL) with its scheme naming ``dialect``."""
    assert dsn.startswith("postgresql://"), dsn
    return f"postgresql+{dialect}://" + dsn[len("postgresql://") :]


class SqlalchemySql:
    """Runs SQL on ``AsyncConnection`` objects (SQLAlchemy begins a transaction by itself), and
    writes the shared suites' pool sizes in SQLAlchemy's words."""

    def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
        """A pool of ``min_size`` to ``max_size`` connections: ``pool_size`` (opened with the pool,
        kept open) and ``pool_size + max_overflow``; a ``min_size`` of 0 is ``pool_size=max_size``
        (``pool_size=0`` means no limit to SQLAlchemy)."""
        if min_size == 0:
            return {"pool_size": max_size, "max_overflow": 0}
        return {"pool_size": min_size, "max_overflow": max_size - min_size}

    async def fetchval(self, connection: Any, sql: str) -> Any:
        return (await connection.exec_driver_sql(sql)).scalar()

    async def execute(self, connection: Any, sql: str) -> None:
        for statement in (part.strip() for part in sql.split(";")):
            if statement:
                await connection.execute(text(statement))
        await connection.commit()

    async def begin(self, connection: Any, *, read_only: bool = False) -> None:
        if read_only:
            await connection.execution_options(postgresql_readonly=True)
        await connection.begin()
