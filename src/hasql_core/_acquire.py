"""The object ``PoolManager.acquire()`` returns: awaitable, and an async context manager."""

from __future__ import annotations

from collections.abc import Awaitable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._topology import HostEntry, LagLimit


class Acquirer(Protocol):
    """What an :class:`AcquireContext` needs from the manager (private to hasql-core)."""

    async def _acquire(
        self, request: AcquireRequest, context: AcquireContext | None = None
    ) -> Any: ...

    def report_error(self, connection: Any, error: BaseException) -> None: ...

    def _give_back(self, connection: Any, failure: BaseException | None) -> Awaitable[None]: ...


#: Values of :attr:`AcquireRequest.route`.
ANY_ROUTE, PRIMARY, FRESH_STANDBY = 0, 1, 2


class AcquireRequest:
    """What one acquire asks for. ``entry`` set means "from this host's pool", whatever its role."""

    __slots__ = (
        "entry",
        "fallback_master",
        "kwargs",
        "lag_limit",
        "read_only",
        "route",
        "stale_fallback",
        "timeout",
        "weight",
    )

    def __init__(
        self,
        read_only: bool,
        fallback_master: bool,
        weight: float,
        lag_limit: LagLimit | None,
        timeout: float,
        kwargs: Mapping[str, Any],
        entry: HostEntry | None = None,
        stale_fallback: bool = False,
    ) -> None:
        self.read_only = read_only
        #: A read may use a standby beyond the lag limit when nothing else can serve it.
        self.stale_fallback = stale_fallback
        self.fallback_master = fallback_master
        self.weight = weight
        self.lag_limit = lag_limit
        self.timeout = timeout
        self.kwargs = kwargs
        self.entry = entry
        #: How the manager may choose its host without the general routing: :data:`PRIMARY`
        #: (a write), :data:`FRESH_STANDBY` (a read within the manager's lag limit, with no
        #: chance of the primary), else :data:`ANY_ROUTE`.
        self.route = (
            ANY_ROUTE
            if entry is not None
            else PRIMARY
            if not read_only
            else FRESH_STANDBY
            if lag_limit is None and weight <= 0.0
            else ANY_ROUTE
        )

    def pinned_to(self, entry: HostEntry) -> AcquireRequest:
        """This request, served from ``entry``'s pool whatever the host's role (same deadline
        and acquire arguments)."""
        return self._copy(self.read_only, entry)

    def for_writes(self) -> AcquireRequest:
        """This request as a write: served by the writable primary (same deadline and acquire
        arguments)."""
        return self._copy(False, None)

    def _copy(self, read_only: bool, entry: HostEntry | None) -> AcquireRequest:
        return AcquireRequest(
            read_only,
            self.fallback_master,
            self.weight,
            self.lag_limit,
            self.timeout,
            self.kwargs,
            entry,
            self.stale_fallback and read_only,
        )

    def describe(self) -> str:
        """What was asked for, in words, for error messages."""
        if self.entry is not None:
            return f"a connection from the pool of {self.entry.state.name}"
        if not self.read_only:
            return "a connection to the primary"
        what = "a connection to a replica"
        if self.lag_limit is not None and not self.lag_limit.unlimited:
            what += f" within lag limit {self.lag_limit}"
        if self.fallback_master:
            what += " (or the primary as fallback)"
        if self.stale_fallback:
            what += " (or a replica beyond the lag limit as a last resort)"
        return what


class AcquireContext:
    """A pending acquire.

    ``conn = await ctx`` returns the driver's connection, which the caller gives back with
    ``await manager.release(conn)``. ``async with ctx as conn:`` releases it on exit, within the
    manager's ``release_timeout``; an exception that leaves the block and means the host failed
    (connection lost, read-only violation) makes the manager re-probe that host at once. After a
    host failure, a cancellation or a timeout inside the block the connection is discarded (closed
    without a server round trip) instead of being reset and reused. The acquire itself starts only
    when awaited or entered.
    """

    __slots__ = ("_connection", "_manager", "request")

    def __init__(self, manager: Acquirer, request: AcquireRequest) -> None:
        self._manager = manager
        #: What this acquire asks for.
        self.request = request
        self._connection: Any = None

    def __await__(self) -> Generator[Any, None, Any]:
        return self._manager._acquire(self.request).__await__()

    # Both return the manager's coroutine itself rather than a coroutine of their own around it:
    # one frame less on every acquire, release and resumption in between.
    def __aenter__(self) -> Awaitable[Any]:
        if self._connection is not None:
            raise RuntimeError("this acquire context is already in use; call acquire() again")
        return self._manager._acquire(self.request, self)

    def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Awaitable[None]:
        connection, self._connection = self._connection, None
        if exc is not None:
            self._manager.report_error(connection, exc)
        return self._manager._give_back(connection, exc)

    def entered(self, connection: Any) -> None:
        """Record the connection ``__aenter__`` hands out (called by the manager)."""
        self._connection = connection
