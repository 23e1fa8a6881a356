"""hasql-core driver plugin for aiopg: ``PoolManager(dsn, driver="aiopg")`` hands out
``aiopg.Connection`` objects, ``driver="aiopg_sa"`` (alias ``"aiopg.sa"``) ``aiopg.sa.SAConnection``
objects. See :mod:`hasql_aiopg.driver`.
"""

from __future__ import annotations

from .driver import AiopgDriver, AiopgSaAliasDriver, AiopgSaDriver, aiopg_error_facts, conninfo

__all__ = [
    "AiopgDriver",
    "AiopgSaAliasDriver",
    "AiopgSaDriver",
    "__version__",
    "aiopg_error_facts",
    "conninfo",
]

__version__ = "0.1.0"
