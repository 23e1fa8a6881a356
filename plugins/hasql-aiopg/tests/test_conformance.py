"""hasql-core's manager-level conformance suite, run for the driver named by HASQL_TEST_DRIVER.

The suite sizes pools with asyncpg's and psycopg's option names (``min_size``, ``max_size``);
aiopg's are ``minsize`` and ``maxsize``. The ``conformance_manager`` fixture is therefore the
suite's own with those two names translated (into a new dict: the user's mapping is never touched)
before the options reach the driver, which passes them to aiopg unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import pytest
from aiopg_helpers import DRIVER_NAME, AiopgSql

from hasql_core.manager import PoolManager
from hasql_core.testing import conformance
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.conformance import *  # noqa: F403 - the suite's tests and fixtures
from hasql_core.testing.conformance import SqlRunner, conformance_cluster

__all__ = ["conformance_cluster", "conformance_manager"]

pytestmark = pytest.mark.timeout(180)

_AIOPG_NAMES = {"min_size": "minsize", "max_size": "maxsize"}


def aiopg_pool_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the suite's size names in aiopg's spelling."""
    return {_AIOPG_NAMES.get(key, key): value for key, value in options.items()}


@pytest.fixture
def conformance_driver() -> str:
    return DRIVER_NAME


@pytest.fixture
def conformance_sql() -> SqlRunner:
    return AiopgSql()


@pytest.fixture
async def conformance_manager(
    conformance_cluster: LocalCluster, conformance_driver: str
) -> AsyncIterator[Callable[..., Awaitable[PoolManager]]]:
    """The suite's ``conformance_manager`` (same settings), with aiopg's pool option names."""
    managers: list[PoolManager] = []

    async def make(ready: bool = True, **kwargs: Any) -> PoolManager:
        options: dict[str, Any] = {
            "refresh_delay": conformance.REFRESH_DELAY,
            "refresh_timeout": conformance.REFRESH_TIMEOUT,
            "acquire_timeout": 5.0,
            "pool_factory_kwargs": {"min_size": 1, "max_size": 4},
            **kwargs,
        }
        options["pool_factory_kwargs"] = aiopg_pool_options(options["pool_factory_kwargs"])
        manager = PoolManager(conformance_cluster.dsn, driver=conformance_driver, **options)
        managers.append(manager)
        if ready:
            await manager.ready(masters_count=1, replicas_count=2, timeout=15)
        return manager

    yield make
    for manager in managers:
        await manager.terminate()
