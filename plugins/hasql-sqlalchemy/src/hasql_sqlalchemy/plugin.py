"""The ``hasql`` entry point of hasql-sqlalchemy: the ``asyncsqlalchemy`` and ``sqlalchemy`` drivers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hasql_core.driver import Driver
from hasql_core.hookspecs import hookimpl

from .driver import AsyncSqlalchemyDriver, SqlalchemyDriver


@hookimpl
def hasql_drivers() -> Sequence[type[Driver[Any, Any, Any]]]:
    """The driver classes of this distribution: ``asyncsqlalchemy`` and its alias ``sqlalchemy``."""
    return [AsyncSqlalchemyDriver, SqlalchemyDriver]
