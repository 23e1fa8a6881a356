"""hasql's ``hasql.exceptions`` names, so ``from hasql.exceptions import ...`` migrates by changing the
module name. Every class is the one :mod:`hasql_core.errors` defines; see there for the others."""

from .errors import (
    AcquireTimeoutError,
    HasqlError,
    NoAvailablePoolError,
    PoolManagerClosedError,
    PoolManagerClosingError,
    UnexpectedDatabaseResponseError,
)

__all__ = [
    "AcquireTimeoutError",
    "HasqlError",
    "NoAvailablePoolError",
    "PoolManagerClosedError",
    "PoolManagerClosingError",
    "UnexpectedDatabaseResponseError",
]
