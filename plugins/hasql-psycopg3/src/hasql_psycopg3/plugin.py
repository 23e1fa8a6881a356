"""The hasql plugin module of hasql-psycopg3, named by its ``hasql`` entry points.

It provides the driver under two names: ``psycopg3`` and its alias ``psycopg``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hasql_core.driver import Driver
from hasql_core.hookspecs import hookimpl

from .driver import PsycopgAliasDriver, PsycopgDriver


@hookimpl
def hasql_drivers() -> Sequence[type[Driver[Any, Any, Any]]]:
    """Return the psycopg 3 driver classes: ``psycopg3`` and the alias ``psycopg``."""
    return [PsycopgDriver, PsycopgAliasDriver]
