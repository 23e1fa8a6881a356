"""The driver contract: what a driver plugin implements so the core can use a database library.

A driver wraps one asyncio PostgreSQL library (asyncpg, psycopg, ...). It knows how to make a pool for
one host, hand out and take back connections, open a dedicated monitor connection and run a query on it,
and how to read the library's exceptions. It knows nothing about roles, balancing or timing: the core
decides which host to use, when to probe it and how long anything may take.

Every method is a plain method, called directly by the core (never through pluggy). Methods that do I/O
are coroutines. The core bounds every awaited call with its own deadline and cancels it when the deadline
passes, so each coroutine must be cancellation-safe: when cancelled it must leave no connection checked
out and no pool half-built.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import attrs

from .dsn import Dsn
from .error_kinds import ErrorFacts, ErrorKind, classify

__all__ = ["Driver", "ErrorFacts", "ErrorKind", "PoolStats"]

PoolT = TypeVar("PoolT")
ConnT = TypeVar("ConnT")
MonitorConnT = TypeVar("MonitorConnT")


@attrs.frozen
class PoolStats:
    """A snapshot of one pool's size, with the same meaning for every driver.

    ``size`` counts open connections, idle or handed out (and, for some libraries, connections being
    opened or being returned). ``idle`` counts open connections waiting in the
    pool. ``in_use`` counts connections handed out. ``free`` is the number of further acquires that can
    succeed without waiting: idle connections plus capacity not yet opened (``max - size``).
    """

    min: int
    max: int
    size: int
    idle: int
    in_use: int

    @property
    def free(self) -> int:
        """Acquires that can be served right now: idle connections plus unopened capacity."""
        return self.idle + max(self.max - self.size, 0)


class Driver(abc.ABC, Generic[PoolT, ConnT, MonitorConnT]):
    """Base class of every driver plugin.

    Subclasses set :attr:`name` and implement every abstract method. One driver instance serves one
    :class:`~hasql_core.PoolManager`; it may keep per-manager state. The ``pool_options`` given to
    :meth:`create_pool` are the user's ``pool_factory_kwargs``: pass them to the library unchanged (copy
    before adding anything) so a user who asks for ``max_size=10`` gets exactly ten connections.
    """

    #: The name users pass as ``PoolManager(..., driver=name)``. Unique among installed plugins.
    name: ClassVar[str]

    #: True when the library, after its host was down, reconnects only on its own backoff schedule
    #: (psycopg_pool waits 1 s, then 2 s, ...). The core then replaces the host's pool with a new
    #: one as soon as a probe finds the host back, so acquires do not wait for that schedule.
    #: Connections still out from the old pool are discarded when they are given back.
    replace_pool_after_outage: ClassVar[bool] = False

    #: True when the caller of a release need not wait for :meth:`release` to end: the core then
    #: runs it without the caller, within the same ``release_timeout`` (the connection counts as
    #: in use until it is back, and a graceful close waits for it), so its work and its round
    #: trips are off the caller's path; its errors are logged, not raised. When acquires are
    #: queued for the pool the caller still waits: it would only trade that wait for one in the
    #: queue. See :attr:`release_needs_task` for how it runs.
    release_in_background: ClassVar[bool] = False

    #: With :attr:`release_in_background`: False when :meth:`release`, once it first waits, only
    #: waits on futures until it ends and needs no task (no ``asyncio.timeout()``, no
    #: ``current_task()``), as asyncpg's release, which waits on its protocol's futures. The caller
    #: then takes the first step and the rest is resumed from the futures' callbacks, which costs
    #: less than the task each background release gets otherwise (from its first step on).
    release_needs_task: ClassVar[bool] = True

    #: With :attr:`release_in_background`: True when :meth:`release` needs no task at all, its
    #: first step included (it may run from an event-loop callback: no ``asyncio.timeout()``, no
    #: ``current_task()``, nothing that cancels "the current task"). The core then starts it from
    #: a callback once the caller went on, so even a release that never waits is off the caller's
    #: path (its work overlaps the caller's next statement), and resumes it from the futures'
    #: callbacks, without a task's cost. Takes precedence over :attr:`release_needs_task`.
    release_task_free: ClassVar[bool] = False

    # -- pools ---------------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> PoolT:
        """Return a pool for the single host of ``dsn``, without connecting yet.

        Must not do I/O and must not modify ``pool_options``. The core then calls :meth:`open_pool`.
        """

    @abc.abstractmethod
    async def open_pool(self, pool: PoolT) -> None:
        """Open the pool made by :meth:`create_pool` (e.g. connect its minimum number of connections).

        The core bounds this call; on failure or cancellation it calls :meth:`terminate_pool`.
        """

    @abc.abstractmethod
    async def acquire(self, pool: PoolT, timeout: float | None, **kwargs: Any) -> ConnT:
        """Take a connection from ``pool`` and return the library's own connection object.

        ``timeout`` is the time left of the caller's deadline (``None``: no limit). The core also cancels
        the call when the deadline passes, so a driver whose library pays for a timeout argument (asyncpg
        wraps it in ``asyncio.wait_for``) may ignore it. ``kwargs`` are the user's extra acquire arguments.
        """

    @abc.abstractmethod
    async def release(self, pool: PoolT, connection: ConnT, **kwargs: Any) -> None:
        """Give ``connection`` back to ``pool`` so it can be handed out again.

        ``kwargs`` are the user's extra release arguments. The library may reset the connection over
        the network (roll back, ``RESET ALL``); the core bounds this call by the manager's
        ``release_timeout`` and, when the bound passes or the caller is cancelled, stops waiting and
        calls :meth:`discard` for the same connection. So a release still in flight must tolerate
        :meth:`discard`: the connection is then closed, and the pool must neither lose the slot nor
        hand the connection out again.
        """

    @abc.abstractmethod
    def discard(self, pool: PoolT, connection: ConnT) -> None:
        """Close ``connection`` at once and free its slot in ``pool``; the pool may open a
        replacement in the background.

        Called instead of :meth:`release` when the connection cannot be trusted or its server may
        not answer: its statement was cancelled or timed out, it failed with a host failure, its
        host is unavailable, or a release did not finish in time. It must not wait on the server:
        no query, no graceful goodbye, nothing awaited (close the socket). It must also work while
        a :meth:`release` of the same connection is in flight, and do nothing for a connection
        already discarded or released. It must not raise for a connection that is already broken.
        """

    @abc.abstractmethod
    async def close_pool(self, pool: PoolT) -> None:
        """Close ``pool`` gracefully: wait for handed-out connections to come back, then close all.

        The core bounds this call and falls back to :meth:`terminate_pool` when it takes too long.
        """

    @abc.abstractmethod
    async def terminate_pool(self, pool: PoolT) -> None:
        """Close ``pool`` and every one of its connections at once, including handed-out ones."""

    async def expire_idle(self, pool: PoolT) -> None:
        """Make sure idle pooled connections are not handed out again (they are closed or replaced).

        Called when a host stops being the primary, so that connections opened while it was writable
        are not reused. The default does nothing; drivers whose library can do this should.
        """

    @abc.abstractmethod
    def pool_stats(self, pool: PoolT) -> PoolStats:
        """Return the pool's size figures (see :class:`PoolStats`). Must be cheap and do no I/O."""

    def free_size(self, pool: PoolT) -> int:
        """``pool_stats(pool).free``: acquires the pool can serve right now without waiting.

        Not on the acquire path (the manager counts handed-out connections itself); drivers may
        override it with something cheaper than building a :class:`PoolStats`.
        """
        return self.pool_stats(pool).free

    # -- connections ---------------------------------------------------------------------------------

    @abc.abstractmethod
    def is_connection_closed(self, connection: ConnT) -> bool:
        """Return True when ``connection`` (a handed-out connection) is closed or broken."""

    @abc.abstractmethod
    def error_facts(self, error: BaseException) -> ErrorFacts:
        """Read the facts of ``error`` (raised by this driver's library, or by the network under
        it): the SQLSTATE the server sent, and whether the connection is reported lost.

        Only facts, no interpretation: the core turns them into an :class:`ErrorKind` with
        :func:`hasql_core.error_kinds.classify`, the same way for every driver. A timeout the
        library raises for a query's own time limit is not a lost connection. Must not raise.
        """

    def classify_error(self, error: BaseException) -> ErrorKind:
        """What kind of failure ``error`` is: :meth:`error_facts` classified by the core.

        Drivers do not override this; they implement :meth:`error_facts`.
        """
        return classify(self.error_facts(error))

    # -- the monitor connection ----------------------------------------------------------------------

    @abc.abstractmethod
    async def connect_monitor(self, dsn: Dsn, timeout: float) -> MonitorConnT:
        """Open a dedicated connection to the host of ``dsn``, outside every pool.

        It runs probe queries only. It must be in autocommit mode (a probe must never leave a transaction
        open, or it would keep reading an old snapshot). ``timeout`` bounds the connect attempt.
        """

    @abc.abstractmethod
    async def probe(self, connection: MonitorConnT, query: str) -> Sequence[Any]:
        """Run ``query`` (the core's probe, one SELECT returning one row) and return that row's values.

        Values keep their column order; booleans, integers, floats, strings and ``None`` come back as the
        Python types of those names.
        """

    async def query_row(self, connection: ConnT, query: str) -> Sequence[Any]:
        """Run ``query`` (one read-only SELECT of the core's, returning one row) on a connection
        handed out by :meth:`acquire`, and return that row's values as :meth:`probe` does.

        Used by causal sessions to read the primary's WAL position after a write. The default runs
        :meth:`probe` on the handed-out connection; override it when a handed-out connection is
        not the same kind of object as a monitor connection. It may leave a transaction open on a
        connection that is not in autocommit mode (the release that follows ends it).
        """
        return await self.probe(connection, query)  # type: ignore[arg-type]

    @abc.abstractmethod
    async def close_monitor(self, connection: MonitorConnT) -> None:
        """Close a monitor connection without waiting on the server (it may be hung or gone)."""
