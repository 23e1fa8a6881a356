"""The ``hasql`` entry point of hasql-aiopg: the ``aiopg`` and ``aiopg_sa`` drivers (and the alias
``aiopg.sa``).

Importing this module needs aiopg only; :mod:`aiopg.sa` (and SQLAlchemy) are imported when an
``aiopg_sa`` driver is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hasql_core.driver import Driver
from hasql_core.hookspecs import hookimpl

from .driver import AiopgDriver, AiopgSaAliasDriver, AiopgSaDriver


@hookimpl
def hasql_drivers() -> Sequence[type[Driver[Any, Any, Any]]]:
    """The driver classes of this distribution: ``aiopg``, ``aiopg_sa`` and its alias ``aiopg.sa``."""
    return [AiopgDriver, AiopgSaDriver, AiopgSaAliasDriver]
