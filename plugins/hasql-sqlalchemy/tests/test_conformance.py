"""hasql-core's manager-level conformance suite, for both dialects.

The suite writes pool options in asyncpg's words (``min_size``/``max_size``); here they become
SQLAlchemy's: ``pool_size=min_size`` (opened with the pool and kept open) and
``max_overflow=max_size - min_size``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy_helpers import DRIVER_NAME, SqlalchemySql, dialect_dsn

from hasql_core import PoolManager
from hasql_core.testing import conformance
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.conformance import *  # noqa: F403 - the suite's tests and fixtures
from hasql_core.testing.conformance import SqlRunner, conformance_cluster

__all__ = ["conformance_cluster"]

pytestmark = pytest.mark.timeout(180)


def _sqlalchemy_options(options: dict[str, Any]) -> dict[str, Any]:
    translated = dict(options)
    if "min_size" in translated or "max_size" in translated:
        low = translated.pop("min_size", 0)
        high = translated.pop("max_size", low)
        translated["pool_size"] = low or high  # pool_size=0 means no limit to SQLAlchemy
        translated["max_overflow"] = high - (low or high)
    return translated


@pytest.fixture
async def conformance_manager(
    conformance_cluster: LocalCluster, dialect: str
) -> AsyncIterator[Callable[..., Awaitable[PoolManager]]]:
    """The suite's manager factory, over a DSN naming ``dialect``, with SQLAlchemy pool options."""
    managers: list[PoolManager] = []
    dsn = dialect_dsn(conformance_cluster.dsn, dialect)

    async def make(ready: bool = True, **kwargs: Any) -> PoolManager:
        options: dict[str, Any] = {
            "refresh_delay": conformance.REFRESH_DELAY,
            "refresh_timeout": conformance.REFRESH_TIMEOUT,
            "acquire_timeout": 5.0,
            **kwargs,
        }
        options["pool_factory_kwargs"] = _sqlalchemy_options(
            kwargs.get("pool_factory_kwargs", {"min_size": 1, "max_size": 4})
        )
        manager = PoolManager(dsn, driver=DRIVER_NAME, **options)
        managers.append(manager)
        if ready:
            await manager.ready(masters_count=1, replicas_count=2, timeout=15)
        return manager

    yield make
    for manager in managers:
        await manager.terminate()


@pytest.fixture
def conformance_driver() -> str:
    return DRIVER_NAME


@pytest.fixture
def conformance_sql() -> SqlRunner:
    return SqlalchemySql()
