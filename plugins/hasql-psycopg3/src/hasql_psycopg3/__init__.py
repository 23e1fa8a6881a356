"""hasql-core driver plugin for psycopg 3: ``PoolManager(dsn, driver="psycopg3")``.

The driver is also registered as ``"psycopg"``. See :mod:`hasql_psycopg3.driver`.
"""

from __future__ import annotations

from .driver import PsycopgAliasDriver, PsycopgDriver, PsycopgPoolTimeout

__all__ = ["PsycopgAliasDriver", "PsycopgDriver", "PsycopgPoolTimeout", "__version__"]

__version__ = "0.1.0"
