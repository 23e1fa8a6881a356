"""hasql-core driver plugin for asyncpg: the ``asyncpg`` and ``asyncpgsa`` drivers.

Users normally name the driver, ``PoolManager(dsn, driver="asyncpg")``; the classes are exported
for passing directly and for subclassing.
"""

from __future__ import annotations

from .driver import AsyncpgDriver, AsyncpgsaDriver, asyncpg_error_facts, connect_arguments

__all__ = ["AsyncpgDriver", "AsyncpgsaDriver", "asyncpg_error_facts", "connect_arguments"]
__version__ = "0.1.0"
