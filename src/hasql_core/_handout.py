"""Connections out of the pools: which host each came from, and how each goes back.

:class:`Handout` is the manager's record of handed-out connections and its policy for giving them
back: released through the driver within ``release_timeout``, or discarded (closed without a server
round trip) when the release could wait on a server that may not answer. For a driver whose
release may finish without its caller (``Driver.release_in_background``), the caller goes on and
the release ends in a task of its own, or from callbacks (:class:`_BackgroundRelease`), under the
same bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ._deadline import TimerWheel, disarm, finish_by
from ._topology import HostEntry
from .driver import Driver
from .error_kinds import HOST_FAILURES, ErrorKind

log = logging.getLogger("hasql_core")

#: An exception that ended a connection's use mid-statement: the library would wait on the server
#: to clean up (a cancellation, a reset), so the connection is discarded instead.
_INTERRUPTIONS = (asyncio.CancelledError, asyncio.TimeoutError, TimeoutError)
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class Handout:
    """Every connection handed out and not yet given back, with the host it came from.

    ``suspect`` is called with a host that failed under one of its connections (the manager then
    routes nothing new to it until it was re-probed). :attr:`all_returned`, once made by
    :meth:`watch_returns`, is set whenever the last connection comes back. Release deadlines are
    kept on ``wheel`` (the manager's; a wheel of its own when not given).
    """

    __slots__ = (
        "_background_tasks",
        "_by_callbacks",
        "_driver",
        "_failed",
        "_release_later",
        "_release_timeout",
        "_suspect",
        "_wheel",
        "all_returned",
        "clock",
        "out",
        "releasing",
    )

    def __init__(
        self,
        driver: Driver[Any, Any, Any],
        release_timeout: float,
        suspect: Callable[[HostEntry], None],
        wheel: TimerWheel | None = None,
    ) -> None:
        self._driver = driver
        self._wheel = TimerWheel() if wheel is None else wheel
        self._release_timeout = release_timeout
        self._suspect = suspect
        #: id -> (connection, host, the pool it came from). The acquire path adds records here
        #: directly.
        self.out: dict[int, tuple[Any, HostEntry, Any]] = {}
        #: The clock deadlines are counted on: the wheel's loop's (the manager sets it to
        #: ``time.monotonic`` itself on a standard asyncio loop).
        self.clock: Callable[[], float] = lambda: self._wheel.loop.time()
        #: ids of handed-out connections that failed with a host failure.
        self._failed: set[int] = set()
        self.all_returned: asyncio.Event | None = None
        #: How the driver's releases may finish in the background (see
        #: ``Driver.release_in_background``, ``release_needs_task`` and ``release_task_free``):
        #: started without the caller (in a task of their own, or from a callback), or resumed
        #: from callbacks after the caller's first step. How many do so now, and the tasks.
        background = driver.release_in_background
        task_free = background and driver.release_task_free
        self._release_later: Callable[[HostEntry, Any, Any, Mapping[str, Any]], None] | None = None
        if task_free:
            self._release_later = self._release_soon
        elif background and driver.release_needs_task:
            self._release_later = self._release_in_task
        self._by_callbacks = background and not driver.release_needs_task and not task_free
        self.releasing = 0
        self._background_tasks: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        """Connections not back yet: handed out, or their release still finishing."""
        return len(self.out) + self.releasing

    def add(self, connection: Any, entry: HostEntry) -> None:
        """Record that ``connection`` came from ``entry``'s pool."""
        self.out[id(connection)] = (connection, entry, entry.pool)
        entry.in_use += 1

    def host_of(self, connection: Any) -> HostEntry | None:
        """The host ``connection`` came from, or None when it is not handed out."""
        item = self.out.get(id(connection))
        return None if item is None else item[1]

    def hosts(self) -> Iterator[HostEntry]:
        """The host of every handed-out connection (one item per connection)."""
        return (item[1] for item in self.out.values())

    def watch_returns(self) -> asyncio.Event:
        """An event set once no connection is out any more (for a graceful close)."""
        self.all_returned = asyncio.Event()
        if not self:
            self.all_returned.set()
        return self.all_returned

    def report_error(self, connection: Any, error: BaseException) -> None:
        """``error`` was raised while ``connection`` was in use. A host failure (connection lost,
        read-only violation, server refusing sessions) makes the host suspect and marks the
        connection to be discarded when it comes back."""
        if not isinstance(error, Exception):
            return
        entry = self.host_of(connection)
        if entry is None:
            return
        kind = self._driver.classify_error(error)
        if kind in HOST_FAILURES:
            entry.count_error(kind.value)
            self._failed.add(id(connection))
            log.info(
                "host %s failed under a handed-out connection (%s); re-probing",
                entry.state.name,
                kind.value,
            )
            self._suspect(entry)

    async def give_back(
        self,
        connection: Any,
        failure: BaseException | None = None,
        kwargs: Mapping[str, Any] = _NO_KWARGS,
        check_closed: bool | None = None,
    ) -> None:
        """Release or discard ``connection`` (see ``PoolManager.release``); ``failure`` is the
        exception that ended its use, if any; ``kwargs`` go to the driver's release. The driver
        is asked whether the connection is closed when ``check_closed`` is true (by default,
        when there was a failure: a block that ended normally used it successfully). Called
        as is at the end of an ``async with`` block (``PoolManager._give_back``).

        With a driver whose release may finish in the background, this returns before the
        driver's release ends (at once, or once it first waits when it needs no task), unless
        acquires are queued for the connection's pool: the rest runs without the caller, within
        the same bound (see :meth:`_release_in_task` and :class:`_BackgroundRelease`), and only
        errors raised before the caller went on reach it."""
        try:
            _, entry, pool = self.out.pop(id(connection))
        except KeyError:
            raise ValueError(
                f"release() got a connection this PoolManager did not hand out (or already "
                f"released): {type(connection).__name__}"
            ) from None
        entry.in_use -= 1
        try:
            if (
                failure is not None
                or check_closed
                or self._failed
                or entry.suspect is not None
                or entry.unavailable
                or pool is not entry.pool
            ) and self._discarded(entry, pool, connection, failure, bool(check_closed)):
                return
            if self._release_later is not None and entry.in_use < entry.capacity:
                self._release_later(entry, pool, connection, kwargs)
                return
            # The driver's release, stepped by hand: when it ends without waiting no deadline is
            # armed (see finish_by).
            releasing = (
                self._driver.release(pool, connection, **kwargs)
                if kwargs
                else self._driver.release(pool, connection)
            )
            try:
                pending = releasing.send(None)
            except StopIteration:
                return
            except BaseException as error:
                self._release_failed(entry, pool, connection, error)
                return
            # In the background, unless acquires queue for this pool: the caller would only
            # trade this wait for one in that queue, and waiting here costs fewer steps.
            if self._by_callbacks and entry.in_use < entry.capacity:
                entry.in_use += 1  # counted in use until it is back: not free for the balancer
                self.releasing += 1
                _BackgroundRelease(self, releasing, pending, entry, pool, connection)
                return
            try:
                await finish_by(
                    releasing, pending, self.clock() + self._release_timeout, self._wheel
                )
            except BaseException as error:
                self._release_failed(entry, pool, connection, error)
        finally:
            if self.all_returned is not None and not self:
                self.all_returned.set()

    def _release_in_task(
        self, entry: HostEntry, pool: Any, connection: Any, kwargs: Mapping[str, Any]
    ) -> None:
        """Run the driver's release of ``connection`` in a task of its own, within
        ``release_timeout``; the connection counts as in use until it is back."""
        entry.in_use += 1
        self.releasing += 1
        task = self._wheel.loop.create_task(self._release_task(entry, pool, connection, kwargs))
        self._background_tasks.add(task)
        task.add_done_callback(self._background_tasks.discard)

    def _release_soon(
        self, entry: HostEntry, pool: Any, connection: Any, kwargs: Mapping[str, Any]
    ) -> None:
        """Start the driver's release of ``connection`` from an event-loop callback (the driver
        needs no task for it); the connection counts as in use until it is back."""
        entry.in_use += 1
        self.releasing += 1
        self._wheel.loop.call_soon(self._start_release, entry, pool, connection, kwargs)

    def _start_release(
        self, entry: HostEntry, pool: Any, connection: Any, kwargs: Mapping[str, Any]
    ) -> None:
        """:meth:`_release_soon`'s callback: the release's first step, then (if it waits) the
        rest resumed from callbacks within ``release_timeout`` (:class:`_BackgroundRelease`)."""
        try:
            releasing = (
                self._driver.release(pool, connection, **kwargs)
                if kwargs
                else self._driver.release(pool, connection)
            )
            pending = releasing.send(None)
        except StopIteration:
            self._background_release_finished(entry, pool, connection, None)
            return
        except BaseException as error:
            self._background_release_finished(entry, pool, connection, error)
            if not isinstance(error, Exception):
                raise  # KeyboardInterrupt, SystemExit: the event loop's to handle
            return
        _BackgroundRelease(self, releasing, pending, entry, pool, connection)

    async def _release_task(
        self, entry: HostEntry, pool: Any, connection: Any, kwargs: Mapping[str, Any]
    ) -> None:
        releasing = self._driver.release(pool, connection, **kwargs)
        try:
            try:
                pending = releasing.send(None)
            except StopIteration:
                return
            await finish_by(releasing, pending, self.clock() + self._release_timeout, self._wheel)
        except BaseException as error:
            self._background_release_ended(entry, pool, connection, error)
            if not isinstance(error, Exception):
                raise  # cancelled (the event loop is shutting down): discarded, and done
        finally:
            self._background_release_done(entry)

    def _background_release_finished(
        self, entry: HostEntry, pool: Any, connection: Any, error: BaseException | None
    ) -> None:
        """A release that went on without its caller has ended, with ``error`` when it failed
        (the connection is then discarded and the error logged)."""
        try:
            if error is not None:
                self._background_release_ended(entry, pool, connection, error)
        finally:
            self._background_release_done(entry)

    def _background_release_done(self, entry: HostEntry) -> None:
        """A release that went on without its caller has ended: its connection is back (or
        discarded), no longer in use."""
        self.releasing -= 1
        entry.in_use -= 1
        if self.all_returned is not None and not self:
            self.all_returned.set()

    def _background_release_ended(
        self, entry: HostEntry, pool: Any, connection: Any, error: BaseException
    ) -> None:
        """A release that went on without its caller failed with ``error``: the connection is
        discarded, and the error logged (there is no caller to raise it to)."""
        try:
            self._release_failed(entry, pool, connection, error)
        except BaseException as unexpected:  # discarded already; nobody to raise to
            if isinstance(unexpected, Exception):
                log.warning(
                    "giving a connection back to %s failed after the caller went on: %s; "
                    "discarded it",
                    entry.state.name,
                    type(unexpected).__name__,
                )

    def _discarded(
        self,
        entry: HostEntry,
        pool: Any,
        connection: Any,
        failure: BaseException | None,
        check_closed: bool,
    ) -> bool:
        """Whether ``connection`` was given back without the driver's release: discarded
        because releasing it could wait on a server that may not answer (see
        :meth:`_must_discard`), or left alone because its pool was replaced or terminated."""
        if pool is not entry.pool:
            self._failed.discard(id(connection))
            if entry.pool is not None:  # replaced meanwhile (after an outage): not back in
                self._discard(entry, pool, connection)
            return True  # else terminated meanwhile: the driver closed the connection already
        if self._must_discard(entry, connection, failure, check_closed):
            self._discard(entry, pool, connection)
            return True
        return False

    def _must_discard(
        self, entry: HostEntry, connection: Any, failure: BaseException | None, check_closed: bool
    ) -> bool:
        """Whether giving ``connection`` back could wait on a server that may not answer."""
        if self._failed and id(connection) in self._failed:
            self._failed.discard(id(connection))
            return True
        if isinstance(failure, _INTERRUPTIONS):
            return True
        if entry.suspect is not None or entry.unavailable:
            return True
        if check_closed and self._driver.is_connection_closed(connection):
            entry.count_error(ErrorKind.CONNECTION_LOST.value)
            self._suspect(entry)
            return True
        return False

    def _release_failed(
        self, entry: HostEntry, pool: Any, connection: Any, error: BaseException
    ) -> None:
        """The driver's release did not end well: discard the connection, and re-raise unless the
        release timed out (its host is then re-probed) or failed with a host failure."""
        self._discard(entry, pool, connection)
        if isinstance(error, asyncio.TimeoutError):
            entry.count_error("release_timeout")
            log.info(
                "giving a connection back to %s took over %gs; discarded it, re-probing the host",
                entry.state.name,
                self._release_timeout,
            )
            self._suspect(entry)
            return
        if not isinstance(error, Exception):  # a cancelled caller: nothing stays checked out
            raise error
        kind = self._driver.classify_error(error)
        if kind not in HOST_FAILURES:
            raise error
        entry.count_error(kind.value)
        self._suspect(entry)

    def _discard(self, entry: HostEntry, pool: Any, connection: Any) -> None:
        entry.discarded += 1
        try:
            self._driver.discard(pool, connection)
        except Exception as error:  # the contract says it must not raise; never fail the caller
            log.warning(
                "the %s driver failed to discard a connection of %s: %s",
                self._driver.name,
                entry.state.name,
                type(error).__name__,
            )


class _BackgroundRelease:
    """The rest of one driver release, after its first wait, carried on without the caller.

    The driver's release coroutine is resumed from the done callback of each future it waits on
    (no task: the driver promises its release needs none, see ``Driver.release_needs_task``).
    A deadline on the handout's wheel ends it after ``release_timeout``: the future waited on is
    cancelled, the coroutine closed, and the connection discarded, as for a release the caller
    waited on.
    """

    __slots__ = ("_alarm", "_connection", "_entry", "_handout", "_pending", "_pool", "_steps")

    def __init__(
        self,
        handout: Handout,
        steps: Any,
        pending: Any,
        entry: HostEntry,
        pool: Any,
        connection: Any,
    ) -> None:
        self._handout = handout
        self._steps = steps
        self._entry = entry
        self._pool = pool
        self._connection = connection
        self._alarm = handout._wheel.arm(
            handout.clock() + handout._release_timeout, self._timed_out
        )
        self._pending: Any = None
        self._wait_on(pending)

    def _wait_on(self, pending: Any) -> None:
        """Resume the release once ``pending`` (what it yielded) is done."""
        self._pending = pending
        if pending is None:  # a bare yield: asyncio's way of saying "the next loop iteration"
            self._handout._wheel.loop.call_soon(self._resume, None)
        else:
            pending._asyncio_future_blocking = False
            pending.add_done_callback(self._resume)

    def _resume(self, _: object) -> None:
        steps = self._steps
        if steps is None:  # ended by its deadline meanwhile
            return
        try:
            self._wait_on(steps.send(None))
            return
        except StopIteration:
            error = None
        except BaseException as failure:
            error = failure
        self._finish(error)
        if error is not None and not isinstance(error, Exception | asyncio.CancelledError):
            raise error  # KeyboardInterrupt, SystemExit: the event loop's to handle

    def _timed_out(self) -> None:
        steps = self._steps
        if steps is None:
            return
        self._steps = None
        if self._pending is not None:
            self._pending.cancel()
        try:
            steps.close()
        except Exception:  # it cannot be resumed again either way
            log.debug("a release cut off by its deadline did not close cleanly", exc_info=True)
        self._finish(asyncio.TimeoutError())

    def _finish(self, error: BaseException | None) -> None:
        """The release ended (with ``error`` when it failed): the connection is back or
        discarded."""
        self._steps = None
        disarm(self._alarm)
        self._handout._background_release_finished(self._entry, self._pool, self._connection, error)
