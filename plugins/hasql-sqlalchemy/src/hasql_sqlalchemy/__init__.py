"""hasql-core driver plugin for SQLAlchemy 2 asyncio, and ORM sessions routed by role.

Users name the driver, ``PoolManager(dsn, driver="asyncsqlalchemy")`` (or ``"sqlalchemy"``), and
make sessions with :func:`async_sessionmaker`; the driver classes are exported for passing directly
and for subclassing.
"""

from __future__ import annotations

from .driver import (
    AsyncSqlalchemyDriver,
    SqlalchemyDriver,
    SqlalchemyPoolClosed,
    SqlalchemyPoolTimeout,
    sqlalchemy_error_facts,
)
from .session import (
    ReadOnlySessionError,
    RoutedAsyncSession,
    RoutedSessionMaker,
    async_sessionmaker,
    is_write_statement,
)

__all__ = [
    "AsyncSqlalchemyDriver",
    "ReadOnlySessionError",
    "RoutedAsyncSession",
    "RoutedSessionMaker",
    "SqlalchemyDriver",
    "SqlalchemyPoolClosed",
    "SqlalchemyPoolTimeout",
    "async_sessionmaker",
    "is_write_statement",
    "sqlalchemy_error_facts",
]
__version__ = "0.1.0"
