"""Connections out of the pools: which host each came from, and how each goes back.

:class:`Handout` is the manager's record of handed-out connections and its policy for giving them
back: released through the driver within ``release_timeout``, or discarded (closed without a server
round trip) when the release could wait on a server that may not answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any

from ._deadline import TimerWheel, finish_by
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
        "_driver",
        "_failed",
        "_release_timeout",
        "_suspect",
        "_wheel",
        "all_returned",
        "clock",
        "out",
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

    def __len__(self) -> int:
        return len(self.out)

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
        if not self.out:
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
        as is at the end of an ``async with`` block (``PoolManager._give_back``)."""
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
            try:
                await finish_by(
                    releasing, pending, self.clock() + self._release_timeout, self._wheel
                )
            except BaseException as error:
                self._release_failed(entry, pool, connection, error)
        finally:
            if self.all_returned is not None and not self.out:
                self.all_returned.set()

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
