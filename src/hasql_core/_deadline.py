"""Awaiting something until a deadline, without the cost of ``asyncio.wait_for``.

``wait_for`` (before Python 3.12) wraps the awaitable in a new task: measurable on the acquire path. Here
a timer cancels the current task if the deadline passes first; the cancellation is turned into
``asyncio.TimeoutError``. When the awaitable finishes in time the timer is just dropped.

The timer is a ``loop.call_at`` handle, or, on the hot paths (acquire, release, the monitor's probes and
sleeps), an :class:`Alarm` on a :class:`TimerWheel`: each ``call_at`` costs a ``TimerHandle`` and a heap
push whose comparisons run in Python, which at thousands of waits per second is a large part of the
manager's own cost; an alarm costs a set insertion.

The hot paths also avoid ``asyncio.get_running_loop()`` and ``asyncio.current_task()`` without a
loop: on Linux with glibc each call is a ``getpid()`` system call (the loop is checked against the
process id), a few microseconds apiece on a virtual machine. A wheel knows its loop instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("hasql_core")

#: Granularity of a :class:`TimerWheel`: alarms ring at most this late, never early.
WHEEL_TICK = 0.005


class _Slot(set["Alarm"]):
    """The alarms of one tick, and the loop timer that rings them (cancelled once none is left:
    an idle manager's withdrawn deadlines do not wake the event loop)."""

    __slots__ = ("handle", "key", "wheel")

    def __init__(self, wheel: TimerWheel, key: int) -> None:
        super().__init__()
        self.wheel = wheel
        self.key = key
        self.handle: asyncio.TimerHandle | None = None


class Alarm:
    """A callback due at some time on a :class:`TimerWheel`; :meth:`cancel` withdraws it."""

    __slots__ = ("_slot", "callback")

    def __init__(self, callback: Callable[[], object]) -> None:
        self.callback = callback
        self._slot: _Slot | None = None

    def ring(self) -> None:
        """Run the callback (the wheel calls this once the alarm is due)."""
        self.callback()

    def cancel(self) -> None:
        """Withdraw the alarm; does nothing once it rang or was withdrawn."""
        slot = self._slot
        if slot is not None:
            self._slot = None
            slot.discard(self)
            if not slot:
                slot.wheel._drop(slot)


class TimerWheel:
    """Many short-lived timers of one event loop for the price of a few loop timers.

    Alarms due within the same :data:`WHEEL_TICK` share one slot and one ``loop.call_at``; scheduling
    and withdrawing an alarm is a set insertion and removal (the slot's loop timer is cancelled
    when its last alarm is withdrawn). An alarm rings at the end of its tick: never before its
    time, at most one tick after it. A wheel serves one event loop: the one given to :meth:`bind`,
    else the one running when it is first used.
    """

    __slots__ = ("_loop", "_slots")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, _Slot] = {}

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the alarms ring on."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on (alarms of a former loop are dropped: they cannot ring)."""
        if loop is not self._loop:
            self._loop, self._slots = loop, {}

    def schedule(self, when: float, alarm: Alarm) -> Alarm:
        """Ring ``alarm`` once ``loop.time()`` reaches ``when``; returns ``alarm``."""
        key = -int(-when // WHEEL_TICK)  # the tick at or after ``when``
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot(self, key)
            slot.handle = self.loop.call_at(key * WHEEL_TICK, self._ring, key)
        slot.add(alarm)
        alarm._slot = slot
        return alarm

    def call_later(self, delay: float, callback: Callable[[], object]) -> Alarm:
        """``callback()`` after ``delay`` seconds (within a tick); cancel with the returned alarm."""
        return self.schedule(self.loop.time() + delay, Alarm(callback))

    def _drop(self, slot: _Slot) -> None:
        """Forget ``slot``, whose last alarm was withdrawn, and cancel its loop timer."""
        if self._slots.get(slot.key) is slot:
            del self._slots[slot.key]
        if slot.handle is not None:
            slot.handle.cancel()
            slot.handle = None

    def _ring(self, key: int) -> None:
        slot = self._slots.pop(key, None)
        if not slot:
            return
        slot.handle = None
        for alarm in tuple(slot):  # a callback may withdraw alarms of this very slot
            if alarm._slot is not slot:
                continue
            alarm._slot = None
            try:
                alarm.ring()
            except Exception:
                log.exception("a timer callback failed")


def _loop_of(wheel: TimerWheel | None) -> asyncio.AbstractEventLoop:
    """The wheel's loop, or the running loop when there is no wheel."""
    return asyncio.get_running_loop() if wheel is None else wheel.loop


def set_done(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` with None unless it is already done (a timer or wake-up callback)."""
    if not future.done():
        future.set_result(None)


class _Expiry(Alarm):
    """Cancels ``task`` when rung (as a wheel alarm or a loop callback), and remembers it did."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self._slot = None
        self.task = task
        self.fired = False

    def ring(self) -> None:
        self.fired = True
        self.task.cancel()

    __call__ = ring


def _withdraw_cancel(task: asyncio.Task[object]) -> bool:
    """Undo our own cancel request; True when nobody else asked to cancel the task."""
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
    return uncancel is None or uncancel() == 0


async def await_until(
    awaitable: Awaitable[T], deadline: float, wheel: TimerWheel | None = None
) -> T:
    """Return ``await awaitable``, or raise ``asyncio.TimeoutError`` once ``loop.time()`` passes
    ``deadline`` (the awaitable is cancelled then). A cancellation from elsewhere propagates unchanged.
    With a ``wheel`` the deadline is kept by an alarm on it (up to one tick late). An awaitable that
    completes at its first step returns without any timer being armed.
    """
    loop = _loop_of(wheel)
    task = asyncio.current_task(loop)
    if task is None:  # not inside a task (of the wheel's loop): fall back to the generic tool
        return await asyncio.wait_for(awaitable, max(deadline - loop.time(), 0.0))
    steps = awaitable.__await__()
    try:
        pending = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    bounded: T = await Bounded(steps, pending, deadline=deadline, wheel=wheel)
    return bounded


class Bounded:
    """``await Bounded(coro, pending, deadline=...)``: carry on ``coro``, a coroutine (or the
    iterator of an awaitable's ``__await__``) the caller has already advanced to its first
    suspension (it yielded ``pending``), and return its result,
    or raise ``asyncio.TimeoutError`` once ``loop.time()`` passes ``deadline`` (``coro`` is
    cancelled then). ``timeout=`` instead of ``deadline=`` counts from now.

    Made for the acquire path, whose callers step the driver's coroutine by hand: most acquires and
    releases complete at that first step (an idle connection was free, nothing had to be sent), and
    then no timer and no object of this class is needed. When the coroutine does wait, an alarm goes
    on ``wheel`` (a loop timer without one); after the first resumption the coroutine's own iterator
    carries on, so waiting costs no Python step per resumption. A cancellation from elsewhere
    propagates unchanged.
    """

    __slots__ = ("_coro", "_deadline", "_loop", "_pending", "_wheel")

    def __init__(
        self,
        coro: Coroutine[Any, Any, Any] | Generator[Any, Any, Any],
        pending: Any,
        *,
        deadline: float | None = None,
        timeout: float = 0.0,
        wheel: TimerWheel | None = None,
    ) -> None:
        self._coro = coro
        self._pending = pending
        self._loop = _loop_of(wheel)
        self._deadline = self._loop.time() + timeout if deadline is None else deadline
        self._wheel = wheel

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, pending, wheel, loop = self._coro, self._pending, self._wheel, self._loop
        task = asyncio.current_task(loop)
        if task is None:
            coro.close()
            raise RuntimeError(
                "awaited outside an asyncio task of the event loop this PoolManager runs on; a "
                "PoolManager serves the event loop it was started in"
            )
        expiry = _Expiry(task)
        timer: Alarm | asyncio.TimerHandle = (
            loop.call_at(self._deadline, expiry)
            if wheel is None
            else wheel.schedule(self._deadline, expiry)
        )
        try:
            while True:
                try:
                    yield pending
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as error:  # cancellation and the like go to the coroutine
                    try:
                        pending = coro.throw(error)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    continue
                # An asyncio task resumes with None, as the first send did: from here on the
                # coroutine's own iterator carries on.
                steps: Generator[Any, Any, Any] = (
                    coro.__await__() if type(coro) is CoroutineType else coro  # type: ignore[assignment]
                )
                result = yield from steps
                break
        except asyncio.CancelledError:
            if expiry.fired and _withdraw_cancel(task):
                raise asyncio.TimeoutError from None
            raise
        finally:
            timer.cancel()
        if expiry.fired:  # finished anyway (the cancel was swallowed below us): keep the result
            _withdraw_cancel(task)
        return result


async def within(awaitable: Awaitable[T], timeout: float, wheel: TimerWheel | None = None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds, else raise ``asyncio.TimeoutError``.

    Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of the caller is never lost when
    the awaitable happens to finish at the same moment: no inner task is involved.
    """
    return await await_until(awaitable, _loop_of(wheel).time() + timeout, wheel)
