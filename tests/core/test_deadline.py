"""Deadlines without a task per call (await_until, finish_by), their timer wheel, and cancellation
that stays correct."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from hasql_core._deadline import WHEEL_TICK, TimerWheel, await_until, disarm, finish_by


async def test_result_before_deadline():
    loop = asyncio.get_running_loop()
    assert await await_until(asyncio.sleep(0, "ok"), loop.time() + 1) == "ok"


async def _slow(cancelled: asyncio.Event) -> None:
    """Sleeps for long; sets ``cancelled`` when cancelled."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        cancelled.set()
        raise


async def test_deadline_raises_timeout_and_cancels_the_awaitable():
    loop = asyncio.get_running_loop()
    cancelled = asyncio.Event()
    with pytest.raises(asyncio.TimeoutError):
        await await_until(_slow(cancelled), loop.time() + 0.05)
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


async def test_wheel_alarms_ring_in_order_never_early_and_within_a_tick():
    loop = asyncio.get_running_loop()
    wheel = TimerWheel()
    rang: list[tuple[str, float]] = []
    done = asyncio.Event()
    start = loop.time()
    due = {"late": start + 0.06, "early": start + 0.02, "mid": start + 0.04}

    def note(name: str) -> Callable[[], None]:
        return lambda: rang.append((name, loop.time()))

    for name, when in due.items():
        wheel.call_later(when - loop.time(), note(name))
    wheel.call_later(0.08, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert [name for name, _ in rang] == ["early", "mid", "late"]
    for name, at in rang:
        assert at >= due[name] - 1e-6  # never early (up to the loop clock's resolution)


async def test_a_withdrawn_alarm_never_rings():
    wheel = TimerWheel()
    rang: list[str] = []
    done = asyncio.Event()
    withdrawn = wheel.call_later(0.01, lambda: rang.append("withdrawn"))
    wheel.call_later(0.01, lambda: rang.append("kept"))
    withdrawn.cancel()
    withdrawn.cancel()  # a second time does nothing
    wheel.call_later(0.01 + 2 * WHEEL_TICK, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert rang == ["kept"]


async def test_a_failing_alarm_does_not_stop_the_others(caplog: pytest.LogCaptureFixture):
    wheel = TimerWheel()
    done = asyncio.Event()

    def fail() -> None:
        raise RuntimeError("boom")

    wheel.call_later(0.01, fail)
    wheel.call_later(0.01, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert "a timer callback failed" in caplog.text


async def _started(coro: Coroutine[Any, Any, Any]) -> tuple[Coroutine[Any, Any, Any], Any]:
    return coro, coro.send(None)


def _in(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_finish_by_returns_the_result_of_a_coroutine_that_waits():
    async def answer() -> str:
        await asyncio.sleep(0.01)
        return "ok"

    coro, pending = await _started(answer())
    assert await finish_by(coro, pending, _in(1), TimerWheel()) == "ok"


async def test_finish_by_times_out_and_cancels_the_coroutine():
    cancelled = asyncio.Event()
    coro, pending = await _started(_slow(cancelled))
    with pytest.raises(asyncio.TimeoutError):
        await finish_by(coro, pending, _in(0.05), TimerWheel())
    assert cancelled.is_set()
    task = asyncio.current_task()
    assert task is not None and getattr(task, "cancelling", lambda: 0)() == 0


async def test_finish_by_passes_an_outside_cancellation_on_unchanged():
    wheel = TimerWheel()
    cleaned_up = asyncio.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned_up.set()

    async def waiter() -> None:
        coro, pending = await _started(slow())
        await finish_by(coro, pending, _in(5), wheel)

    task = asyncio.ensure_future(waiter())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned_up.is_set()


async def test_finish_by_keeps_a_result_that_arrives_despite_the_deadline():
    # A coroutine that finishes its cleanup and returns a value even when cancelled at the
    # deadline (as a driver's shielded release does): the value is kept, no timeout raised.
    async def stubborn() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "finished anyway"
        return "never"

    coro, pending = await _started(stubborn())
    assert await finish_by(coro, pending, _in(0.02), TimerWheel()) == "finished anyway"
    await asyncio.sleep(0)  # no stray cancellation is left pending on this task


async def test_a_result_ready_at_once_is_returned_even_past_the_deadline():
    # The coroutine completes at its first step: nothing waited, so nothing can have timed out.
    async def at_once() -> int:
        return 7

    loop = asyncio.get_running_loop()
    assert await await_until(at_once(), loop.time() - 1) == 7

    async def waits() -> int:
        await asyncio.sleep(0.05)
        return 8

    with pytest.raises(asyncio.TimeoutError):
        await await_until(waits(), loop.time() - 1)


async def test_an_alarm_may_withdraw_another_of_the_same_tick():
    wheel = TimerWheel()
    rang: list[str] = []
    done = asyncio.Event()
    when = wheel.loop.time() + 0.01
    second: list[Any] = []

    def first() -> None:
        rang.append("first")
        disarm(second[0])

    # Both land in the same tick; whichever rings first, the other must not ring after being
    # withdrawn, and the ring must not fail on the slot changing under it.
    wheel.arm(when, first)
    second.append(wheel.arm(when, lambda: rang.append("second")))
    wheel.call_later(0.01 + 2 * WHEEL_TICK, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert rang in (["first"], ["second", "first"])


async def test_withdrawing_every_alarm_then_scheduling_again_still_rings():
    wheel = TimerWheel()
    done = asyncio.Event()
    when = wheel.loop.time() + 0.01
    wheel.call_at(when, lambda: None).cancel()  # the tick's slot goes away
    wheel.call_at(when, done.set)  # and is made again
    await asyncio.wait_for(done.wait(), 5)


async def test_an_alarm_armed_by_a_ringing_alarm_rings_too():
    wheel = TimerWheel()
    loop = wheel.loop
    done = asyncio.Event()
    rang: list[str] = []

    def first() -> None:
        rang.append("first")
        wheel.call_at(loop.time() - 1, lambda: rang.append("overdue"))  # already past due
        wheel.call_later(0.02, done.set)

    wheel.call_later(0.01, first)
    await asyncio.wait_for(done.wait(), 5)
    assert rang == ["first", "overdue"]


async def test_alarms_over_many_ticks_all_ring_once_in_order():
    wheel = TimerWheel()
    loop = wheel.loop
    start = loop.time()
    rang: list[int] = []
    done = asyncio.Event()
    # Armed latest first, so the wheel's single loop timer has to be moved earlier each time;
    # each in a tick of its own (the order within a tick is not promised).
    for n in reversed(range(20)):
        wheel.call_at(start + 1.2 * WHEEL_TICK * n, lambda n=n: rang.append(n))  # type: ignore[misc]
    wheel.call_at(start + 1.2 * WHEEL_TICK * 22, done.set)
    await asyncio.wait_for(done.wait(), 5)
    assert rang == sorted(rang) and sorted(rang) == list(range(20))


@pytest.fixture
async def loop_timers(monkeypatch: pytest.MonkeyPatch) -> list[asyncio.TimerHandle]:
    """Every timer set on the running event loop from now on (``loop.call_at``)."""
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []
    call_at = loop.call_at

    def recording_call_at(when: float, callback: Any, *args: Any, **kw: Any) -> asyncio.TimerHandle:
        handle = call_at(when, callback, *args, **kw)
        handles.append(handle)
        return handle

    monkeypatch.setattr(loop, "call_at", recording_call_at)
    return handles


async def test_withdrawn_alarms_leave_no_timer_on_the_event_loop(
    loop_timers: list[asyncio.TimerHandle],
) -> None:
    # The monitor's deadlines are withdrawn long before they are due; an idle event loop must
    # not be woken for them.
    wheel = TimerWheel()
    loop = wheel.loop
    kept = asyncio.Event()
    soon = wheel.call_later(0.5, lambda: None)
    later = wheel.call_later(2.0, lambda: None)
    shared = wheel.call_later(1.0, lambda: None)
    wheel.call_at(loop.time() + 1.0, kept.set)  # in the same tick as ``shared``: that slot stays
    soon.cancel()
    later.cancel()
    shared.cancel()
    live = [h for h in loop_timers if not h.cancelled()]
    assert len(live) == 1 and live[0].when() >= loop.time() + 1.0 - WHEEL_TICK
    await asyncio.wait_for(kept.wait(), 5)


async def test_await_until_leaves_no_timer_once_done(
    loop_timers: list[asyncio.TimerHandle],
) -> None:
    wheel = TimerWheel()
    loop = wheel.loop
    future: asyncio.Future[int] = loop.create_future()
    loop.call_soon(future.set_result, 7)
    assert await await_until(future, loop.time() + 30, wheel) == 7
    assert loop_timers and all(h.cancelled() for h in loop_timers)
