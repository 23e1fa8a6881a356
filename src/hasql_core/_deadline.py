"""Awaiting something until a deadline, without the cost of ``asyncio.wait_for``.

``wait_for`` (before Python 3.12) wraps the awaitable in a new task: measurable on the acquire path. Here
a timer armed with ``loop.call_at`` cancels the current task if the deadline passes first; the
cancellation is turned into ``asyncio.TimeoutError``. When the awaitable finishes in time the timer is
just dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Coroutine, Generator
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")


def set_done(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` with None unless it is already done (a timer or wake-up callback)."""
    if not future.done():
        future.set_result(None)


class _Expiry:
    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


def _withdraw_cancel(task: asyncio.Task[object]) -> bool:
    """Undo our own cancel request; True when nobody else asked to cancel the task."""
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
    return uncancel is None or uncancel() == 0


async def await_until(awaitable: Awaitable[T], deadline: float) -> T:
    """Return ``await awaitable``, or raise ``asyncio.TimeoutError`` once ``loop.time()`` passes
    ``deadline`` (the awaitable is cancelled then). A cancellation from elsewhere propagates unchanged.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    if task is None:  # not inside a task: fall back to the generic tool
        return await asyncio.wait_for(awaitable, max(deadline - loop.time(), 0.0))
    expiry = _Expiry(task)
    timer = loop.call_at(deadline, expiry)
    try:
        result = await awaitable
    except asyncio.CancelledError:
        if expiry.fired and _withdraw_cancel(task):
            raise asyncio.TimeoutError from None
        raise
    finally:
        timer.cancel()
    if expiry.fired:  # finished anyway (the cancel was swallowed below us): keep the result
        _withdraw_cancel(task)
    return result


class Resumed:
    """Awaitable that carries on a coroutine already advanced to its first suspension point."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending = self._coro, self._first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as error:  # cancellation and the like go to the coroutine
                step = partial(coro.throw, error)
            else:
                step = partial(coro.send, sent)
            try:
                pending = step()
            except StopIteration as stop:
                return stop.value


async def run_until(coro: Coroutine[Any, Any, T], deadline: float) -> T:
    """Like :func:`await_until`, but arms no timer when ``coro`` finishes without waiting.

    ``coro`` is run by hand up to its first suspension. When it completes right away (an idle pooled
    connection was free) its result is returned at the cost of one call; only when it really has to
    wait is the rest of it awaited under the deadline.
    """
    try:
        first = coro.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    return await await_until(Resumed(coro, first), deadline)


async def within(awaitable: Awaitable[T], timeout: float) -> T:
    """``await awaitable`` for at most ``timeout`` seconds, else raise ``asyncio.TimeoutError``.

    Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of the caller is never lost when
    the awaitable happens to finish at the same moment: no inner task is involved.
    """
    return await await_until(awaitable, asyncio.get_running_loop().time() + timeout)
