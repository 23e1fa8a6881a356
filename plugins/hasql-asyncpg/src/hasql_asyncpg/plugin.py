"""The ``hasql`` entry point of hasql-asyncpg: provides the ``asyncpg`` and ``asyncpgsa`` drivers.

Importing this module needs asyncpg only; asyncpgsa (and SQLAlchemy 1.x) are imported when an
``asyncpgsa`` driver is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hasql_core.driver import Driver
from hasql_core.hookspecs import hookimpl

from .driver import AsyncpgDriver, AsyncpgsaDriver


@hookimpl
def hasql_drivers() -> Sequence[type[Driver[Any, Any, Any]]]:
    """The driver classes of this distribution: ``asyncpg`` and ``asyncpgsa``."""
    return [AsyncpgDriver, AsyncpgsaDriver]
