"""Fixtures for core tests: simulated clusters and managers over the fake driver."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from hasql_core import PoolManager
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

FAST: dict[str, Any] = {"refresh_delay": 0.05, "refresh_timeout": 0.3, "acquire_timeout": 2.0}


@pytest.fixture
def cluster() -> FakeCluster:
    """Three simulated hosts: db0 primary, db1 and db2 standbys."""
    return FakeCluster(3)


@pytest.fixture
async def make_manager() -> AsyncIterator[Callable[..., PoolManager]]:
    """Build managers over a fake cluster with fast monitor settings; all are terminated after."""
    managers: list[PoolManager] = []

    def make(cluster: FakeCluster, **kwargs: Any) -> PoolManager:
        options = {**FAST, **kwargs}
        manager = PoolManager(cluster.dsn, driver=FakeDriver(cluster), **options)
        managers.append(manager)
        return manager

    yield make
    for manager in managers:
        await manager.terminate()


async def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``predicate`` every 10 ms until true; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)
