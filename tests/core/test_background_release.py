"""Releases that finish in the background (``Driver.release_in_background``): the caller goes on
without waiting for the driver's release (which runs in a task of its own, or, for a driver whose
release needs none, is resumed from callbacks after the caller's first step, or, for a driver whose
release needs no task at all, is started from a callback); it is bounded by ``release_timeout`` all
the same. Every test runs in the three ways."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from hasql_core import PoolManager
from hasql_core._deadline import within
from hasql_core.testing.fake_driver import (
    FakeCluster,
    FakeConnection,
    FakeConnectionLost,
    FakeDriver,
    FakePool,
)

from .conftest import FAST, wait_for

#: A bound that turns a hang into a test failure; far above every bound the tests configure.
HANG = 10.0


class ResettingDriver(FakeDriver):
    """The fake driver with a release that first waits for its host to answer (a reset query),
    declared to need no task of its own; ``fail_reset_with`` makes that reset fail."""

    release_in_background = True
    release_needs_task = False

    def __init__(self, cluster: FakeCluster) -> None:
        super().__init__(cluster)
        self.fail_reset_with: BaseException | None = None
        self.resets_finished = 0
        #: For each release: whether it ran inside a task after its first wait.
        self.in_task: list[bool] = []

    async def release(self, pool: FakePool, connection: FakeConnection, **kwargs: Any) -> None:
        await connection.host.answer()
        self.in_task.append(asyncio.current_task() is not None)
        if self.fail_reset_with is not None:
            raise self.fail_reset_with
        self.resets_finished += 1
        await super().release(pool, connection, **kwargs)


class TaskResettingDriver(ResettingDriver):
    """:class:`ResettingDriver`, its background releases each run in a task of their own."""

    release_needs_task = True


class TaskFreeResettingDriver(ResettingDriver):
    """:class:`ResettingDriver`, declared to need no task even for its first step."""

    release_task_free = True


@pytest.fixture(
    params=[ResettingDriver, TaskResettingDriver, TaskFreeResettingDriver],
    ids=["callbacks", "task", "task-free"],
)
def driver_class(request: pytest.FixtureRequest) -> type[ResettingDriver]:
    """The three ways a release finishes in the background."""
    cls: type[ResettingDriver] = request.param
    return cls


@pytest.fixture
async def manager(cluster: FakeCluster, driver_class: type[ResettingDriver]) -> Any:
    """A manager over ``driver_class`` that does not probe during a test."""
    pm = PoolManager(
        cluster.dsn,
        driver=driver_class(cluster),
        **{**FAST, "refresh_delay": 30.0, "release_timeout": 0.3},
    )
    await pm.ready(masters_count=1, replicas_count=2)
    yield pm
    await pm.terminate()


def _primary_pool(pm: PoolManager) -> FakePool:
    pool = pm.pools[0]
    assert isinstance(pool, FakePool)
    return pool


async def test_leaving_the_block_does_not_wait_for_the_reset(cluster, manager):
    driver = manager.driver
    async with manager.acquire_master():
        cluster.hosts[0].freeze()
    # Left while the reset waits on the frozen host: still counted in use until it is back.
    assert driver.resets_finished == 0
    assert manager.metrics().hosts[0].pool.in_use == 1
    assert manager._entries[0].in_use == 1  # not free for the balancer either
    cluster.hosts[0].thaw()
    await wait_for(lambda: manager.metrics().hosts[0].pool.in_use == 0)
    assert driver.resets_finished == 1
    assert driver.discarded == 0
    assert not _primary_pool(manager).in_use  # back in its pool, not discarded


async def test_reset_on_a_frozen_host_is_cut_off_by_release_timeout(cluster, manager):
    driver = manager.driver
    conn = await manager.acquire_master()
    cluster.hosts[0].freeze()
    await within(manager.release(conn), HANG)
    assert driver.discarded == 0
    await wait_for(lambda: driver.discarded == 1)
    host = manager.metrics().hosts[0]
    assert host.errors.get("release_timeout") == 1
    assert host.pool.in_use == 0
    assert driver.resets_finished == 0
    assert cluster.hosts[0].frozen  # discarded without an answer from the host
    cluster.hosts[0].thaw()


async def test_a_failed_reset_is_logged_and_the_connection_discarded(cluster, manager, caplog):
    driver = manager.driver
    driver.fail_reset_with = RuntimeError("reset refused: password=hunter2")
    conn = await manager.acquire_master()
    cluster.hosts[0].latency = 0.01  # so that the release has to wait
    with caplog.at_level(logging.WARNING, logger="hasql_core"):
        await within(manager.release(conn), HANG)
        await wait_for(lambda: driver.discarded == 1)
    assert manager.metrics().hosts[0].pool.in_use == 0
    assert "RuntimeError" in caplog.text
    assert "hunter2" not in caplog.text
    assert not manager.metrics().hosts[0].held_back  # not the host's fault


async def test_a_host_failure_during_the_reset_makes_the_host_suspect(cluster, manager):
    driver = manager.driver
    driver.fail_reset_with = FakeConnectionLost("gone")
    cluster.hosts[0].latency = 0.01
    async with manager.acquire_master():
        pass
    await wait_for(lambda: driver.discarded == 1)
    host = manager.metrics().hosts[0]
    assert host.errors.get("connection_lost") == 1
    assert host.pool.in_use == 0


async def test_releasing_twice_while_the_first_is_in_flight_raises(cluster, manager):
    conn = await manager.acquire_master()
    cluster.hosts[0].freeze()
    await manager.release(conn)
    with pytest.raises(ValueError, match="already"):
        await manager.release(conn)
    cluster.hosts[0].thaw()


async def test_close_waits_for_releases_in_flight(cluster, manager):
    driver = manager.driver
    async with manager.acquire_master():
        cluster.hosts[0].latency = 0.05
    closing = asyncio.ensure_future(manager.close())
    await within(closing, HANG)
    assert driver.resets_finished == 1  # close waited for the reset, did not cut it off
    assert driver.discarded == 0


async def test_close_counts_a_release_in_flight_as_still_out(cluster, manager, caplog):
    async with manager.acquire_master():
        cluster.hosts[0].freeze()
    with caplog.at_level(logging.WARNING, logger="hasql_core"):
        await within(manager.close(timeout=0.05), HANG)
    assert "1 connection(s) still handed out" in caplog.text
    cluster.hosts[0].thaw()


async def test_release_waits_for_its_reset_when_acquires_queue_for_the_pool(cluster, driver_class):
    # One connection per pool: a second acquire queues behind the first, and the release of the
    # first waits for its reset itself (its caller would otherwise only wait in that queue).
    driver = driver_class(cluster)
    pm = PoolManager(
        cluster.dsn,
        driver=driver,
        pool_factory_kwargs={"min_size": 1, "max_size": 1},
        **{**FAST, "refresh_delay": 30.0, "release_timeout": 5.0},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=2)
        conn = await pm.acquire_master()
        queued = asyncio.ensure_future(pm.acquire_master())
        await wait_for(lambda: pm._entries[0].in_use == 2)
        cluster.hosts[0].latency = 0.02
        await within(pm.release(conn), HANG)
        assert driver.resets_finished == 1  # released in the foreground
        await pm.release(await within(queued, HANG))
        await wait_for(lambda: driver.resets_finished == 2)
    finally:
        await pm.terminate()


async def test_a_release_that_needs_a_task_runs_in_one(cluster, manager, driver_class):
    cluster.hosts[0].latency = 0.01  # the release waits, then goes on
    async with manager.acquire_master():
        pass
    await wait_for(lambda: manager.driver.resets_finished == 1)
    in_task = driver_class.release_needs_task and not driver_class.release_task_free
    assert manager.driver.in_task == [in_task]


async def test_a_release_that_never_waits_runs_after_the_caller_went_on(
    cluster, manager, driver_class
):
    # The host answers at once: the reset completes at its first step. Only a driver whose
    # release gets the caller's first step (callbacks) runs it before the block is left.
    async with manager.acquire_master():
        pass
    ran_in_the_block = manager.driver.resets_finished == 1
    assert ran_in_the_block is (
        not driver_class.release_needs_task and not driver_class.release_task_free
    )
    await wait_for(lambda: manager.metrics().hosts[0].pool.in_use == 0)
    assert manager.driver.resets_finished == 1
    assert manager._entries[0].in_use == 0
