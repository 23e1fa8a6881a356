"""The driver's short release path (``hasql_asyncpg._pool_steps``) and the cases it leaves to
asyncpg's ``Pool.release``.

The short path runs asyncpg's holder release without ``Pool.release``'s shield, and hasql-core
may step it from future callbacks, with no task (``release_needs_task = False``). These tests
release through a PoolManager, as an application does, in the cases where code that needs the
current task would run inside that release, and check that the connection comes back to the pool
(the same server backend serves the next acquire), that such code ran inside a task, and that
nothing was logged as failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import eventually
from hasql_asyncpg import _pool_steps

from hasql_core import PoolManager

pytestmark = pytest.mark.timeout(120)


def _single_pool_manager(cluster: Any, **pool_options: Any) -> PoolManager:
    """A manager over the primary alone, with one connection in its pool."""
    options = {"min_size": 1, "max_size": 1, **pool_options}
    return PoolManager(cluster.primary.dsn, pool_factory_kwargs=options, driver="asyncpg")


async def _released(pm: PoolManager) -> None:
    """Wait until every connection is back in its pool (a release may end after the block)."""

    async def stats() -> Any:
        return [pm.driver.pool_stats(pool) for pool in pm.pools]

    await eventually(stats, lambda all_stats: all(s.in_use == 0 for s in all_stats))


def _failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name.startswith("hasql_core") and record.levelno >= logging.WARNING
    ]


async def _backend_after_release(
    pm: PoolManager, use: Callable[[Any], Any] | None = None
) -> tuple[int, int]:
    """The server pid of the pool's connection before and after one ``async with`` block."""
    await pm.ready(timeout=30)
    async with pm.acquire_master() as conn:
        before = conn.get_server_pid()
        if use is not None:
            await use(conn)
    await _released(pm)
    async with pm.acquire_master() as conn:
        after = conn.get_server_pid()
        assert await conn.fetchval("SELECT 1") == 1
    await _released(pm)
    return before, after


async def test_release_after_a_statement_cancelled_by_the_client(
    shared_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # A statement cut short by the application's own bound leaves asyncpg cancelling it on the
    # server when the block ends: the release first waits for that cancellation to finish.
    async def cancelled_statement(conn: Any) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(conn.fetchval("SELECT pg_sleep(30)"), 0.05)

    caplog.set_level(logging.WARNING)
    pm = _single_pool_manager(shared_cluster)
    try:
        before, after = await _backend_after_release(pm, cancelled_statement)
    finally:
        await pm.close()
    assert before == after, "the connection was discarded instead of released"
    assert _failures(caplog) == []


#: For each custom reset run by the test below: whether it ran inside a task.
_RESETS_IN_TASK: list[bool] = []


class _TaskCheckingConnection(asyncpg.Connection):  # type: ignore[misc]
    """A connection class with a reset of its own that notes whether it ran in a task."""

    async def reset(self, *, timeout: float | None = None) -> None:
        await asyncio.sleep(0)
        _RESETS_IN_TASK.append(asyncio.current_task() is not None)
        await super().reset(timeout=timeout)


@pytest.mark.parametrize("where", ["connection class", "pool reset callback"])
async def test_custom_reset_code_runs_in_a_task(
    where: str, shared_cluster: Any, caplog: pytest.LogCaptureFixture
) -> None:
    _RESETS_IN_TASK.clear()

    async def reset(conn: Any) -> None:
        await asyncio.sleep(0)
        _RESETS_IN_TASK.append(asyncio.current_task() is not None)

    if where == "connection class":
        options: dict[str, Any] = {"connection_class": _TaskCheckingConnection}
    else:
        options = {"reset": reset}
    caplog.set_level(logging.WARNING)
    pm = _single_pool_manager(shared_cluster, **options)
    try:
        before, after = await _backend_after_release(pm)
    finally:
        await pm.close()
    assert _RESETS_IN_TASK == [True, True]
    assert before == after
    assert _failures(caplog) == []


def test_the_installed_asyncpg_has_the_internals_of_the_short_paths() -> None:
    # When a new asyncpg changes them, the driver falls back to the public methods (correct, but
    # slower); this says so in the test run instead of leaving it to the benchmarks.
    assert _pool_steps.INTERNALS_FOUND


async def test_without_the_internals_the_public_methods_serve(
    shared_cluster: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pool_steps, "INTERNALS_FOUND", False)
    used: list[str] = []
    public_release = asyncpg.pool.Pool.release

    def counting_release(pool: Any, connection: Any, **kwargs: Any) -> Any:
        used.append("Pool.release")
        return public_release(pool, connection, **kwargs)

    monkeypatch.setattr(asyncpg.pool.Pool, "release", counting_release)
    caplog.set_level(logging.WARNING)
    pm = _single_pool_manager(shared_cluster)
    try:
        before, after = await _backend_after_release(pm)
    finally:
        await pm.close()
    assert before == after
    assert used == ["Pool.release", "Pool.release"]
    assert _failures(caplog) == []
