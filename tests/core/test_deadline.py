"""await_until: a deadline without a task per call, and cancellation that stays correct."""

from __future__ import annotations

import asyncio

import pytest

from hasql_core._deadline import await_until


async def test_result_before_deadline():
    loop = asyncio.get_running_loop()
    assert await await_until(asyncio.sleep(0, "ok"), loop.time() + 1) == "ok"


async def test_deadline_raises_timeout_and_cancels_the_awaitable():
    loop = asyncio.get_running_loop()
    cancelled = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(asyncio.TimeoutError):
        await await_until(slow(), loop.time() + 0.05)
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0
    await asyncio.sleep(0)  # no stray cancellation is left pending on this task


async def test_outside_cancellation_is_not_turned_into_timeout():
    loop = asyncio.get_running_loop()

    async def waiter() -> None:
        await await_until(asyncio.sleep(10), loop.time() + 5)

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
