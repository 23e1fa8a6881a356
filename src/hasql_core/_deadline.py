"""Awaiting something until a deadline, without the cost of ``asyncio.wait_for``.

``wait_for`` (before Python 3.12) wraps the awaitable in a new task: measurable on the acquire path. Here
a timer cancels the current task if the deadline passes first; the cancellation is turned into
``asyncio.TimeoutError``. When the awaitable finishes in time the timer is just dropped.

The timer is an entry on a :class:`TimerWheel`: a ``loop.call_at`` per wait costs a ``TimerHandle``
and a heap push whose comparisons run in Python, which at thousands of waits per second is a large
part of the manager's own cost; a wheel entry is a two-item list appended to a slot.

The hot paths also avoid ``asyncio.get_running_loop()`` and ``asyncio.current_task()`` without a
loop: on Linux with glibc each call is a ``getpid()`` system call (the loop is checked against the
process id), a few microseconds apiece on a virtual machine. A wheel knows its loop instead.

What the acquire path pays for a deadline is counted in Python bytecodes per operation (see
``bench/hasql_bench/bytecodes.py``): on a real driver each one costs several times what it costs in
a tight loop, so the code below is written for few of them rather than for elegance.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from heapq import heapify, heappop, heappush
from operator import itemgetter
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("hasql_core")

#: Granularity of a :class:`TimerWheel`: alarms ring at most this late, never early.
WHEEL_TICK = 0.005
_TICKS_PER_SECOND = 200  # 1 / WHEEL_TICK, as a multiplier

#: An armed deadline on a wheel: ``[callback, rang]``. ``callback`` is None once the entry rang or
#: was withdrawn (:func:`disarm`); ``rang`` is True once it rang. A list rather than an object of a
#: class of its own: making one is a single bytecode.
Entry = list[Any]


#: Whether an entry is still armed (its callback is set), as a C function.
_armed = itemgetter(0)


def slot_key(when: float) -> int:
    """The wheel slot of a deadline: the end of the tick ``when`` falls in."""
    return int(when * _TICKS_PER_SECOND) + 1


def disarm(entry: Entry) -> None:
    """Withdraw a wheel entry; does nothing once it rang or was withdrawn."""
    entry[0] = None


class Alarm:
    """A callback due on a :class:`TimerWheel` (from :meth:`TimerWheel.call_at` or
    :meth:`TimerWheel.call_later`); :meth:`cancel` withdraws it."""

    __slots__ = ("_entry", "_key", "_wheel")

    def __init__(self, wheel: TimerWheel, key: int, entry: Entry) -> None:
        self._wheel = wheel
        self._key = key
        self._entry = entry

    @property
    def rang(self) -> bool:
        """Whether the callback was called."""
        return bool(self._entry[1])

    def cancel(self) -> None:
        """Withdraw the alarm; does nothing once it rang or was withdrawn. Its slot is dropped
        when nothing else is armed there, so an idle wheel is not woken for nothing."""
        if self._entry[0] is not None:
            self._entry[0] = None
            self._wheel.tidy(self._key)


class TimerWheel:
    """Many short-lived timers of one event loop for the price of a few loop timers.

    Deadlines due within the same :data:`WHEEL_TICK` share one slot; arming one is a list append,
    withdrawing it one store. The wheel keeps one loop timer, for its earliest slot, and sets the
    next one when it rings: the event loop's own timer heap (whose comparisons run in Python) holds
    one entry per wheel, not one per wait or per tick. An entry rings at the end of its tick: never
    before its time, at most one tick after it.

    Slots are not dropped when their entries are withdrawn: they ring and find nothing to do.
    Dropping them would cost a loop timer per wait whenever waits do not overlap (one task
    acquiring in a loop opened and cancelled a slot on every acquire); this way an idle wheel is
    woken at most once per tick until the last deadline armed before it fell idle has passed, and
    not at all after that.

    A wheel serves one event loop: the one given to :meth:`bind`, else the one running when it is
    first used.
    """

    __slots__ = ("_due", "_keys", "_loop", "_slots", "_timer")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: dict[int, list[Entry]] = {}
        #: The keys of ``_slots`` as a heap (integers: compared in C, unlike the loop's timers).
        self._keys: list[int] = []
        #: The one loop timer of the wheel, due at the end of tick ``_due``: the earliest slot's.
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the entries ring on."""
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``loop`` from now on (entries of a former loop are dropped: they cannot ring)."""
        if loop is not self._loop:
            self._loop, self._slots, self._keys, self._timer = loop, {}, [], None

    def arm(self, when: float, callback: Callable[[], object]) -> Entry:
        """Call ``callback()`` once ``loop.time()`` reaches ``when``; withdraw the returned entry
        with :func:`disarm`. A callback that raises is logged, not propagated."""
        return self._arm(slot_key(when), callback)

    def _arm(self, key: int, callback: Callable[[], object]) -> Entry:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._open_slot(key)
        entry = [callback, False]
        slot.append(entry)
        return entry

    def call_at(self, when: float, callback: Callable[[], object]) -> Alarm:
        """``callback()`` once ``loop.time()`` reaches ``when`` (within a tick)."""
        key = slot_key(when)
        return Alarm(self, key, self._arm(key, callback))

    def call_later(self, delay: float, callback: Callable[[], object]) -> Alarm:
        """``callback()`` after ``delay`` seconds (within a tick)."""
        return self.call_at(self.loop.time() + delay, callback)

    def tidy(self, key: int) -> None:
        """Drop slot ``key`` if nothing armed is left in it, and the loop timer with it if it
        was set for that slot. Not for the acquire path (it costs a heap rebuild); for callers
        whose waits are rare, such as the monitor, whose withdrawn deadlines would otherwise wake
        an idle event loop once each."""
        slot = self._slots.get(key)
        if slot is None or next(filter(_armed, slot), None) is not None:
            return
        del self._slots[key]
        self._keys.remove(key)
        heapify(self._keys)
        if key == self._due and self._timer is not None:
            self._timer.cancel()
            self._timer = None
            if self._keys:
                self._set_timer(self._keys[0])

    def _open_slot(self, key: int) -> list[Entry]:
        slot: list[Entry] = []
        self._slots[key] = slot
        heappush(self._keys, key)
        if self._timer is None or key < self._due:
            if self._timer is not None:
                self._timer.cancel()
            self._set_timer(key)
        return slot

    def _set_timer(self, key: int) -> None:
        self._due = key
        self._timer = self.loop.call_at(key / _TICKS_PER_SECOND, self._ring)

    def _ring(self) -> None:
        """Ring every slot due by now, then set the timer for the next one."""
        self._timer = None
        keys, slots = self._keys, self._slots
        due = self._due
        while keys and keys[0] <= due:
            # Most entries were withdrawn long ago; filter() skips them without a Python step,
            # and looks at each entry only when the loop gets to it (a callback may withdraw
            # entries of this slot).
            for entry in filter(_armed, slots.pop(heappop(keys))):
                callback = entry[0]
                entry[0] = None
                entry[1] = True
                try:
                    callback()
                except Exception:
                    log.exception("a timer callback failed")
        if keys and self._timer is None:  # (a callback may have armed an earlier slot)
            self._set_timer(keys[0])


def set_done(future: asyncio.Future[None]) -> None:
    """Resolve ``future`` with None unless it is already done (a timer or wake-up callback)."""
    if not future.done():
        future.set_result(None)


#: ``asyncio.current_task(loop)`` for a given loop. Before Python 3.12 that is a Python function
#: reading this dict; reading the dict directly saves a call on every wait. From 3.12 on it is
#: written in C (and the dict no longer necessarily holds every task).
_current_task: Callable[[asyncio.AbstractEventLoop], asyncio.Task[Any] | None] = (
    asyncio.tasks._current_tasks.get  # type: ignore[attr-defined]
    if sys.version_info < (3, 12)
    else asyncio.current_task
)


def _withdraw_cancel(task: asyncio.Task[object]) -> bool:
    """Undo our own cancel request; True when nobody else asked to cancel the task."""
    uncancel = getattr(task, "uncancel", None)  # Python >= 3.11
    return uncancel is None or uncancel() == 0


@types.coroutine
def finish_by(
    steps: Coroutine[Any, Any, T] | Generator[Any, Any, T],
    pending: Any,
    deadline: float,
    wheel: TimerWheel,
) -> Generator[Any, Any, T]:
    """``await finish_by(steps, pending, deadline, wheel)``: carry on ``steps``, a coroutine (or the
    iterator of an awaitable's ``__await__``) the caller has already advanced to its first
    suspension (it yielded ``pending``), and return its result, or raise
    ``asyncio.TimeoutError`` once ``loop.time()`` passes ``deadline`` (``steps`` is cancelled
    then; up to one wheel tick late). A cancellation from elsewhere propagates unchanged, and a
    result that arrives despite the deadline's cancellation is kept.

    Made for the acquire path, whose callers step the driver's coroutine by hand: most acquires
    complete at that first step (an idle connection was free), and then no deadline is armed.
    After the first resumption the coroutine's own iterator carries on, so waiting costs no
    Python step per resumption.
    """
    task = _current_task(wheel._loop or wheel.loop)
    if task is None:
        steps.close()
        raise RuntimeError(
            "awaited outside an asyncio task of the event loop this PoolManager runs on; a "
            "PoolManager serves the event loop it was started in"
        )
    # wheel.arm(deadline, task.cancel), inlined: this runs on every wait.
    key = int(deadline * _TICKS_PER_SECOND) + 1  # slot_key(deadline)
    slot = wheel._slots.get(key)
    if slot is None:
        slot = wheel._open_slot(key)
    entry = [task.cancel, False]
    slot.append(entry)
    try:
        try:
            yield pending
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as error:  # cancellation and the like go to the coroutine
            result: T = yield from _carry_on_after(steps, error)
        else:
            # An asyncio task resumes with None, as the first send did: from here on the
            # coroutine's own iterator carries on.
            result = yield from steps  # type: ignore[misc]  # allowed: this is a types.coroutine
    except asyncio.CancelledError:
        if entry[1] and _withdraw_cancel(task):
            raise asyncio.TimeoutError from None
        raise
    finally:
        entry[0] = None  # disarm(entry), inlined
    if entry[1]:  # finished anyway (the cancel was swallowed below us): keep the result
        _withdraw_cancel(task)
    return result


@types.coroutine
def _carry_on_after(
    steps: Coroutine[Any, Any, T] | Generator[Any, Any, T], error: BaseException
) -> Generator[Any, Any, T]:
    """Throw ``error`` into ``steps``, then carry it on to its result."""
    try:
        pending = steps.throw(error)
    except StopIteration as stop:
        result: T = stop.value
        return result
    while True:
        try:
            yield pending
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as again:
            try:
                pending = steps.throw(again)
            except StopIteration as stop:
                result = stop.value
                return result
            continue
        result = yield from steps  # type: ignore[misc]  # allowed: this is a types.coroutine
        return result


async def await_until(
    awaitable: Awaitable[T], deadline: float, wheel: TimerWheel | None = None
) -> T:
    """Return ``await awaitable``, or raise ``asyncio.TimeoutError`` once ``loop.time()`` passes
    ``deadline`` (the awaitable is cancelled then). A cancellation from elsewhere propagates
    unchanged. The deadline is kept on ``wheel`` (up to one tick late; a wheel of its own for this
    call when none is given). An awaitable that completes at its first step returns without any
    timer being armed.
    """
    if wheel is None:
        wheel = TimerWheel()
    loop = wheel.loop
    if asyncio.current_task(loop) is None:  # not inside a task of the loop: the generic tool
        return await asyncio.wait_for(awaitable, max(deadline - loop.time(), 0.0))
    steps = awaitable.__await__()
    try:
        pending = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    try:
        return await finish_by(steps, pending, deadline, wheel)
    finally:
        wheel.tidy(slot_key(deadline))  # rare waits (the monitor's): wake nobody for nothing


async def within(awaitable: Awaitable[T], timeout: float, wheel: TimerWheel | None = None) -> T:
    """``await awaitable`` for at most ``timeout`` seconds, else raise ``asyncio.TimeoutError``.

    Unlike ``asyncio.wait_for`` before Python 3.12, a cancellation of the caller is never lost when
    the awaitable happens to finish at the same moment: no inner task is involved.
    """
    if wheel is None:
        wheel = TimerWheel()
    return await await_until(awaitable, wheel.loop.time() + timeout, wheel)
