"""The ``psycopg3`` driver: hasql-core on top of psycopg 3 and psycopg_pool, async API only.

One :class:`psycopg_pool.AsyncConnectionPool` per host, built from the user's
``pool_factory_kwargs`` as given; handed-out connections are the pool's own
:class:`psycopg.AsyncConnection` objects. The monitor uses a dedicated autocommit
:class:`psycopg.AsyncConnection` per host, outside every pool.

Behaviour worth knowing (all of it tested against a real server):

- Every method that the core may cancel returns promptly when cancelled. psycopg, when a query is
  cancelled, tries to cancel it on the server and waits for that (up to about ten seconds when the
  server is frozen); :meth:`PsycopgDriver.probe` keeps that off the caller's task.
- :meth:`PsycopgDriver.terminate_pool` closes connections that are handed out too: the driver keeps
  the set of connections it handed out and not yet took back, per pool.
- :meth:`PsycopgDriver.expire_idle` uses :meth:`psycopg_pool.AsyncConnectionPool.drain`: idle
  connections are closed and replaced, and handed-out ones are closed when they come back.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import math
import os
import select
import socket
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, ClassVar, TypeAlias

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.conninfo import make_conninfo
from psycopg.pq import ConnStatus, TransactionStatus

from hasql_core.driver import Driver, ErrorFacts, PoolStats
from hasql_core.dsn import Dsn
from hasql_core.errors import ConfigurationError, HasqlError

__all__ = ["PsycopgAliasDriver", "PsycopgDriver", "PsycopgPoolTimeout"]

AsyncConn: TypeAlias = psycopg.AsyncConnection[Any]
AsyncPool: TypeAlias = psycopg_pool.AsyncConnectionPool[AsyncConn]

#: Pool options the driver sets itself; a user who passes them gets a ConfigurationError.
RESERVED_POOL_OPTIONS = frozenset({"conninfo", "open"})

#: How long a graceful :meth:`PsycopgDriver.close_pool` lets the pool's background workers finish
#: their current job (connecting, resetting a returned connection) before they are cancelled.
CLOSE_WORKERS_TIMEOUT = 1.0
#: The same for :meth:`PsycopgDriver.terminate_pool` and for a failed or cancelled open.
TERMINATE_WORKERS_TIMEOUT = 0.1
#: Upper bound on waiting for cancelled background tasks (pool workers, an abandoned probe) to end.
#: They end within a loop iteration or two; the bound only guards against a library change.
TASK_END_TIMEOUT = 0.5

#: How long an interrupted statement waits for its cancel request to be taken (see
#: :func:`bounded_cancel_class`). A live server takes it in milliseconds; past this the request
#: goes on in the background and the connection is closed.
CANCEL_WAIT = 0.25
#: The background cancel request's own bound.
CANCEL_TIMEOUT = 5.0
#: Cancel requests still running in the background (kept referenced until they end).
_CANCELLING: set[asyncio.Future[None]] = set()

#: Application name of monitor connections, unless the DSN names one.
MONITOR_APPLICATION_NAME = "hasql-monitor"

_BAD = ConnStatus.BAD
_OK = ConnStatus.OK
_IDLE = TransactionStatus.IDLE
_HAS_POLL = hasattr(select, "poll")
_POOL_ERRORS = (psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed, psycopg_pool.TooManyRequests)


class PsycopgPoolTimeout(HasqlError, asyncio.TimeoutError):
    """No connection could be taken from a psycopg pool in time.

    Raised by :meth:`PsycopgDriver.acquire` in place of :class:`psycopg_pool.PoolTimeout`, which is
    chained as ``__cause__``. Being an :class:`asyncio.TimeoutError`, the core reports it as its own
    acquire timeout.
    """


class _PoolState:
    """What the driver keeps per pool: handed-out connections, the acquires waiting in line for
    one of them, closing flag, background tasks."""

    __slots__ = (
        "close_task",
        "closing",
        "discards",
        "handed_out",
        "loop",
        "max_size",
        "pool",
        "releasing",
        "returned",
        "waiters",
        "woken",
        "workers",
    )

    def __init__(self, pool: AsyncPool) -> None:
        self.pool = pool
        self.handed_out: set[AsyncConn] = set()
        #: Set when the last handed-out connection comes back; made by a close that has to wait.
        self.returned: asyncio.Event | None = None
        self.closing = False
        self.workers: set[asyncio.Task[Any]] = set()
        self.close_task: asyncio.Future[None] | None = None
        #: Connections whose ``putconn`` is in flight (it may be rolling back over the network).
        self.releasing: set[AsyncConn] = set()
        #: Background ``putconn`` calls of discarded connections (kept referenced until done).
        self.discards: set[asyncio.Future[None]] = set()
        #: Acquires waiting for a handed-out connection to come back, first come first served
        #: (see :meth:`wait_turn`), and how many were woken and have not yet taken theirs.
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.woken = 0
        #: The pool's ``max_size`` when last looked at (see :meth:`must_wait`).
        self.max_size: int = pool.max_size
        #: The event loop the pool was opened on.
        self.loop: asyncio.AbstractEventLoop | None = None

    def checked_in(self, connection: AsyncConn) -> None:
        self.handed_out.discard(connection)
        if self.returned is not None and not self.handed_out:
            self.returned.set()

    def must_wait(self, pool: AsyncPool) -> bool:
        """Whether an acquire has to wait its turn: others already wait, or every connection
        the pool may hold is handed out (or being returned, or promised to a woken waiter).

        Refreshes :attr:`max_size`, which the acquire path reads to call this only when the
        answer may be yes (``pool.max_size`` is a property: a Python call on every acquire)."""
        self.max_size = pool.max_size
        return bool(self.waiters) or (
            len(self.handed_out) + len(self.releasing) + self.woken >= self.max_size
        )

    async def wait_turn(self, pool: AsyncPool) -> None:
        """Wait until a connection this driver handed out comes back to ``pool`` (released or
        discarded), in line behind the acquires that came first; then the caller takes it with
        ``getconn``.

        psycopg_pool's own wait (``getconn`` on an empty pool) runs ``asyncio.wait_for`` with a
        task, a condition and a timer per waiting request, which under load costs more than the
        rest of an acquire. This is one future per wait; it has no timer of its own (the core
        cancels the acquire at its deadline). Honours the pool's ``max_waiting``. Raises
        :class:`psycopg_pool.PoolClosed` when the pool closes meanwhile.
        """
        if pool.max_waiting and len(self.waiters) >= pool.max_waiting:
            raise psycopg_pool.TooManyRequests(
                f"the pool {pool.name!r} already has {len(self.waiters)} requests waiting"
            )
        waiter = (self.loop or asyncio.get_running_loop()).create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.woken -= 1  # woken, then cancelled before it could run: pass the turn on
                self.wake_one()
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise
        self.woken -= 1
        if self.closing:  # woken just before the close began
            raise psycopg_pool.PoolClosed(f"the pool {pool.name!r} is closing")

    def wake_one(self) -> None:
        """A handed-out connection came back: the longest-waiting acquire may take it."""
        waiters = self.waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self.woken += 1
                return

    def fail_waiters(self, why: str) -> None:
        """End every waiting acquire with :class:`psycopg_pool.PoolClosed` (each its own, with
        message ``why``): the pool is closing."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(psycopg_pool.PoolClosed(why))

    async def all_returned(self) -> None:
        """Wait until no connection is handed out."""
        if self.handed_out:
            if self.returned is None:
                self.returned = asyncio.Event()
            await self.returned.wait()


def _shutdown_socket(connection: AsyncConn) -> bool:
    """Shut the connection's socket down (both ways) without closing the file descriptor.

    A task blocked on the socket wakes up at once and sees end-of-file, and libpq then drops the
    connection itself; closing the descriptor under a waiting task instead would leave the event
    loop watching a number the kernel may hand to the next socket. Needs no answer from the server.
    Returns False when there was no socket left to shut down.
    """
    try:
        fd = connection.pgconn.socket
    except psycopg.Error:  # already closed
        return False
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        return False
    return True


def _poll_readable(fd: int) -> bool:
    """Whether ``fd`` has input (or end-of-file, or an error) pending; does not block."""
    poller = select.poll()  # no FD_SETSIZE limit, unlike select()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _select_readable(fd: int) -> bool:
    """:func:`_poll_readable` where ``select.poll`` does not exist (Windows)."""
    readable, _, _ = select.select([fd], [], [], 0)
    return bool(readable)


_readable = _poll_readable if _HAS_POLL else _select_readable


def _closed_by_server(connection: AsyncConn) -> str | None:
    """Why an idle connection is unusable, or None when it looks usable; no round trip.

    An idle connection's socket has nothing to read unless the server sent something unasked:
    a FATAL message before closing (shutdown, ``pg_terminate_backend()``, postmaster death),
    end-of-file, or harmless asynchronous messages (NOTIFY, parameter changes). When it is
    readable libpq reads and parses the input, which tells them apart: libpq marks the connection
    bad at end-of-file and passes a FATAL message that arrives while idle to the notice handlers
    (the end-of-file may not have arrived yet). A connection found dead this way is closed, so
    the pool discards it.
    """
    pgconn = connection.pgconn
    if pgconn.status == _BAD:
        return "the connection is closed"
    fatal: list[str] = []

    def on_notice(diag: pg_errors.Diagnostic) -> None:
        if diag.severity_nonlocalized in ("FATAL", "PANIC"):
            fatal.append(f"{diag.sqlstate}: {diag.message_primary}")

    try:
        if _readable(pgconn.socket):
            connection.add_notice_handler(on_notice)
            try:
                pgconn.consume_input()  # reads (and sees end-of-file) without parsing
                pgconn.is_busy()  # parses; queued NOTIFYs stay queued for psycopg
            finally:
                connection.remove_notice_handler(on_notice)
    except (psycopg.Error, OSError) as exc:
        return str(exc) or type(exc).__name__
    if fatal:
        _finish(connection)
        return fatal[0]
    if pgconn.status == _BAD:
        return "the connection is closed"
    return None


async def _run_to_completion(coro: Coroutine[Any, None, None]) -> None:
    """Await ``coro``, letting it finish even if the caller is cancelled meanwhile.

    psycopg_pool's ``putconn()`` loses the connection when it is cancelled while waiting for a
    lock (the pool still counts it, so the pool shrinks for good). Shielding it in a task costs a
    task and a loop iteration per release, most of the time for nothing: ``putconn()`` usually
    completes without suspending. So the coroutine is started inline, and only if it suspends is
    the rest run in a task that the caller awaits through :func:`asyncio.shield`. The task steps
    the coroutine the way asyncio's own tasks do: it waits for the future the coroutine yielded,
    then resumes it.
    """
    try:
        yielded = coro.send(None)
    except StopIteration:
        return
    await _finish_shielded(coro, yielded)


async def _finish_shielded(coro: Coroutine[Any, None, None], yielded: Any) -> None:
    """The rest of :func:`_run_to_completion`: ``coro``, suspended on ``yielded``, carried on in
    a task the caller awaits through :func:`asyncio.shield`."""
    await _shielded(_resume(coro, yielded))


async def _shielded(coro: Coroutine[Any, None, None]) -> None:
    """Run ``coro`` in a task of its own and wait for it; cancelling the caller does not stop
    it."""
    task = asyncio.ensure_future(coro)
    _forget(task)
    await asyncio.shield(task)


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _resume(coro: Coroutine[Any, None, None], yielded: Any) -> None:
    """Drive ``coro``, suspended on ``yielded`` (an asyncio future, or None), to its end."""
    loop = asyncio.get_running_loop()
    while True:
        if yielded is None:  # a bare yield, as in asyncio.sleep(0)
            await asyncio.sleep(0)
        else:
            yielded._asyncio_future_blocking = False
            if not yielded.done():
                waiter: asyncio.Future[None] = loop.create_future()
                yielded.add_done_callback(functools.partial(_wake, waiter))
                try:
                    await waiter
                except asyncio.CancelledError:  # the loop is shutting down: cancel as a task would
                    yielded.cancel()
        try:
            yielded = coro.send(None)
        except StopIteration:
            return


def _finish(connection: AsyncConn) -> None:
    """Close a connection at once, on the client side only (sends no query, awaits nothing).

    ``AsyncConnection.close()`` would hand a pool connection back to its pool when the pool was made
    with ``close_returns=True``; finishing the libpq connection closes it in every case.
    """
    connection.pgconn.finish()


def _forget(task: asyncio.Future[Any]) -> None:
    """Let ``task`` end on its own, retrieving its outcome so asyncio logs nothing about it."""
    task.add_done_callback(lambda t: None if t.cancelled() else t.exception())


async def _abandon(connecting: asyncio.Future[AsyncConn]) -> None:
    """Cancel a connection attempt and wait (briefly) until it has let go of its socket.

    A connection that got made all the same is closed. Cancelling the caller again only stops the
    wait; the attempt still ends on its own.
    """
    connecting.cancel()
    connecting.add_done_callback(_close_if_connected)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait({connecting}, timeout=TASK_END_TIMEOUT)


def _close_if_connected(task: asyncio.Future[AsyncConn]) -> None:
    """Done-callback of an abandoned connect: close the connection if it was made after all."""
    if task.cancelled() or task.exception() is not None:
        return
    _finish(task.result())


_NO_FACTS = ErrorFacts()


def _facts_of_one(error: BaseException) -> ErrorFacts:
    if isinstance(error, (*_POOL_ERRORS, asyncio.TimeoutError, TimeoutError)):
        return _NO_FACTS
    if isinstance(error, psycopg.Error):
        sqlstate = error.sqlstate
        lost = isinstance(error, psycopg.OperationalError) and sqlstate is None
        return ErrorFacts(sqlstate=sqlstate, connection_lost=lost)
    if isinstance(error, OSError):
        return ErrorFacts(connection_lost=True)
    return _NO_FACTS


@functools.cache
def bounded_cancel_class(base: type[AsyncConn]) -> type[AsyncConn]:
    """A subclass of the connection class ``base`` whose cancel requests are bounded.

    When a statement is interrupted (``asyncio.wait_for`` around it ran out, or its task was
    cancelled), psycopg sends the server a cancel request and waits for the statement to end, up to
    about ten seconds in all (forever with psycopg 3.2) when the server is frozen, inside the
    application's own ``await``. The subclass waits at most :data:`CANCEL_WAIT` for the cancel
    request (a live server takes it in milliseconds, and the connection stays usable); when the
    server does not take it in that time, the request goes on in the background (bounded by
    :data:`CANCEL_TIMEOUT`) and the connection's socket is shut down, so psycopg's wait for the
    statement ends at once and the connection is closed (the core then discards it). Connections
    handed out are still instances of ``base`` (the user's ``connection_class``, or
    :class:`psycopg.AsyncConnection`).
    """

    class BoundedCancelConnection(base):  # type: ignore[valid-type,misc]
        async def cancel_safe(self, *, timeout: float = 30.0) -> None:
            request = asyncio.ensure_future(
                super().cancel_safe(timeout=min(timeout, CANCEL_TIMEOUT) if timeout else 0)
            )
            _forget(request)
            _CANCELLING.add(request)
            request.add_done_callback(_CANCELLING.discard)
            done, _ = await asyncio.wait({request}, timeout=CANCEL_WAIT)
            if request in done:
                request.result()
                return
            _shutdown_socket(self)
            raise pg_errors.CancellationTimeout(
                f"the server did not take the cancel request within {CANCEL_WAIT:g}s; the "
                "connection was closed (the request goes on in the background)"
            )

    BoundedCancelConnection.__name__ = BoundedCancelConnection.__qualname__ = base.__name__
    BoundedCancelConnection.__module__ = base.__module__
    return BoundedCancelConnection


class PsycopgDriver(Driver[AsyncPool, AsyncConn, AsyncConn]):
    """hasql-core driver for psycopg 3 (``psycopg.AsyncConnection``, ``psycopg_pool``).

    Pools are :class:`psycopg_pool.AsyncConnectionPool` built with the user's
    ``pool_factory_kwargs`` passed through unchanged (``min_size``, ``max_size``, ``kwargs``,
    ``configure``, ``reset``, ``check``, ``max_waiting``, ``timeout``, ...), so handed-out
    connections behave exactly as the user configured them (not autocommit unless asked for).
    Only ``conninfo`` and ``open`` are set by the driver; passing them raises
    :class:`~hasql_core.errors.ConfigurationError`. A pool without a ``name`` is named after its
    host, for psycopg_pool's log messages.

    Every host's DSN is given to libpq with ``target_session_attrs=any``: the core picks the host,
    so libpq must connect to whichever role the host has.

    One instance serves one pool manager and keeps per-pool state (the handed-out connections);
    it does no I/O outside the awaited methods.
    """

    name: ClassVar[str] = "psycopg3"
    #: ``putconn()`` needs no caller: the core runs it after the caller went on (within
    #: ``release_timeout``), so its work overlaps the caller's next statement.
    release_in_background: ClassVar[bool] = True
    #: ... and needs no task: an idle connection's ``putconn()`` puts it back without I/O or
    #: timeouts; anything else (a rollback, extra arguments) runs in a task of its own that
    #: :meth:`release` waits for.
    release_task_free: ClassVar[bool] = True
    #: psycopg_pool reconnects to a host that was down on its own backoff (1 s, 2 s, ...).
    replace_pool_after_outage: ClassVar[bool] = True

    def __init__(self) -> None:
        self._pools: dict[AsyncPool, _PoolState] = {}  # by identity: pools do not define ==

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    def conninfo(dsn: Dsn, **overrides: str) -> str:
        """The libpq connection string for ``dsn`` (with its password), with ``overrides`` applied.

        ``target_session_attrs`` is always ``any``.
        """
        return make_conninfo(dsn.to_conninfo(), target_session_attrs="any", **overrides)

    def _state(self, pool: AsyncPool) -> _PoolState | None:
        return self._pools.get(pool)

    # -- pools ---------------------------------------------------------------------------------

    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> AsyncPool:
        """Build an unopened :class:`psycopg_pool.AsyncConnectionPool` for ``dsn``'s host.

        Does no I/O and never modifies ``pool_options`` (it is copied; the only addition to the
        copy is a default ``name``). Raises :class:`~hasql_core.errors.ConfigurationError` for the
        reserved options ``conninfo`` and ``open``, and whatever psycopg_pool raises for an option
        it does not know.
        """
        reserved = sorted(RESERVED_POOL_OPTIONS.intersection(pool_options))
        if reserved:
            raise ConfigurationError(
                f"pool option(s) {', '.join(map(repr, reserved))} cannot be set for the psycopg3 "
                "driver: the connection string comes from the DSN and the pool is opened by "
                "hasql. Remove them from pool_factory_kwargs."
            )
        options = dict(pool_options)
        options.setdefault("name", str(dsn.hosts[0]))
        options["connection_class"] = bounded_cancel_class(
            options.get("connection_class", psycopg.AsyncConnection)
        )
        pool: AsyncPool = psycopg_pool.AsyncConnectionPool(
            self.conninfo(dsn), open=False, **options
        )
        self._pools[pool] = _PoolState(pool)
        return pool

    async def open_pool(self, pool: AsyncPool) -> None:
        """Open ``pool`` and wait until it holds ``min_size`` connections.

        Waits at most the pool's ``timeout`` option (psycopg_pool's default: 30 s); the core
        normally cancels sooner, on its own deadline. On failure or cancellation the pool is
        closed before the exception propagates: no connection stays open and none of
        psycopg_pool's background tasks (workers, scheduler) keeps running.
        """
        state = self._state(pool)
        before = asyncio.all_tasks()
        try:
            # open(wait=False) only starts the pool's tasks. They are told apart from every other
            # task by being new and carrying the pool's name (psycopg_pool names them after it).
            await pool.open(wait=False)
            if state is not None:
                state.loop = asyncio.get_running_loop()
                prefix = f"{pool.name}-"
                state.workers = {
                    task
                    for task in asyncio.all_tasks() - before
                    if task.get_name().startswith(prefix)
                }
            await pool.wait(timeout=pool.timeout)
        except BaseException:
            await self._shut(pool, state, TERMINATE_WORKERS_TIMEOUT)
            raise

    async def acquire(self, pool: AsyncPool, timeout: float | None, **kwargs: Any) -> AsyncConn:
        """Take a connection from ``pool`` (``pool.getconn``); the caller must :meth:`release` it.

        ``timeout`` bounds a wait in psycopg_pool (``None`` leaves it to the pool's ``timeout``
        option); when it passes, :class:`PsycopgPoolTimeout` (an :class:`asyncio.TimeoutError`) is
        raised with psycopg_pool's ``PoolTimeout`` as its cause. A wait in the driver's own line
        (below) has no timer: the core cancels the acquire at its deadline, as the driver
        contract allows. ``kwargs`` go to ``getconn`` as given.
        Raises :class:`psycopg_pool.PoolClosed` once :meth:`close_pool` or :meth:`terminate_pool`
        began.

        A connection the server already closed is never handed out: psycopg learns of that only at
        its next I/O, so each connection is checked without a round trip (is its socket readable
        while idle? then libpq reads what is there: end-of-file or a termination message). A dead
        one goes back to the pool, which replaces it, and the next idle one is tried; when none is
        left, ``psycopg.OperationalError`` (``CONNECTION_LOST``) is raised so the core re-probes the
        host instead of waiting for a new connection to a server that may be gone.

        When every connection the pool may hold is handed out, the acquire waits in the driver's
        own first-come-first-served line for one of them to come back (see
        :meth:`_PoolState.wait_turn`) rather than in psycopg_pool's, which costs several times
        more per wait; it then takes the returned connection with ``getconn``. psycopg_pool's own
        statistics therefore count those waits as immediate requests.

        Cancellation-safe: psycopg_pool (>= 3.3.1) gives back a connection it had assigned to a
        cancelled ``getconn``, and the connection is recorded as handed out in the same step that
        returns it; a waiter cancelled after its turn came passes the turn on.
        """
        state = self._pools.get(pool)
        if state is not None:
            if state.closing:
                raise psycopg_pool.PoolClosed(f"the pool {pool.name!r} is closing")
            if (
                state.waiters or len(state.handed_out) + state.woken >= state.max_size
            ) and state.must_wait(pool):
                await state.wait_turn(pool)
        try:
            while True:
                try:
                    connection = await pool.getconn(timeout=timeout, **kwargs)
                except psycopg_pool.PoolTimeout as exc:
                    raise PsycopgPoolTimeout(f"pool {pool.name!r}: {exc}") from exc
                pgconn = connection.pgconn
                if pgconn.status == _OK and not _readable(pgconn.socket):  # usual: at once
                    reason = None
                else:
                    reason = _closed_by_server(connection)
                if reason is None:
                    if state is not None:
                        state.handed_out.add(connection)
                    return connection
                await _run_to_completion(pool.putconn(connection))
                if pool.get_stats()["pool_available"] == 0:
                    raise psycopg.OperationalError(
                        f"the server closed the idle connections of pool {pool.name!r}: {reason}"
                    )
        except BaseException:
            # Whatever this acquire would have taken is still in the pool: the next in line may.
            if state is not None and state.waiters:
                state.wake_one()
            raise

    async def release(self, pool: AsyncPool, connection: AsyncConn, **kwargs: Any) -> None:
        """Give ``connection`` back to ``pool`` (``pool.putconn``).

        psycopg_pool rolls back an open transaction (and runs the ``reset`` callback, if any);
        a closed or broken connection is discarded and replaced. ``kwargs`` go to ``putconn``.
        Cancelling the caller does not interrupt the return: it completes in the background, so
        the connection is never lost (psycopg_pool alone would lose it, see
        :func:`_run_to_completion`).

        Needs no task of its own (``release_task_free``): an idle connection (the usual case)
        goes back in the first step, without I/O (psycopg_pool hands one that needs the pool's
        ``reset`` callback to a worker task of its own); a rollback, or extra arguments, run in
        a task this waits for.
        """
        state = self._pools.get(pool)
        if state is not None:
            state.checked_in(connection)
        putting = pool.putconn(connection, **kwargs) if kwargs else pool.putconn(connection)
        if state is None or kwargs or connection.pgconn.transaction_status != _IDLE:
            # A rollback: I/O, and code that may need a task (the connection class's, psycopg's
            # waits). It all runs in a task (release_task_free). (The pool's reset callback
            # needs nothing here: psycopg_pool runs it in a worker task of its own.)
            rest = putting
        else:
            try:  # _run_to_completion's first step, inlined: putconn() rarely has to wait
                yielded = putting.send(None)
            except BaseException as ended:
                # Back in the pool (StopIteration), or dropped and being replaced: the next in
                # line may take it either way.
                if state is not None and state.waiters:
                    state.wake_one()
                if isinstance(ended, StopIteration):
                    return
                raise
            rest = _resume(putting, yielded)
        if state is None:
            await _shielded(rest)
            return
        state.releasing.add(connection)
        try:
            await _shielded(rest)
        finally:
            state.releasing.discard(connection)
            if state.waiters:
                state.wake_one()

    def discard(self, pool: AsyncPool, connection: AsyncConn) -> None:
        """Close ``connection`` at once and let the pool replace it; nothing waits on the server.

        The socket is shut down first, so a release of the same connection still in flight (a
        rollback waiting on a frozen server) fails at once, and psycopg_pool then closes the
        connection and opens a replacement itself. Otherwise the libpq connection is closed and
        handed to ``putconn`` in the background: psycopg_pool drops a closed connection and opens
        a replacement. A connection already given back (or discarded) is left alone.
        """
        state = self._state(pool)
        if state is not None:
            if connection not in state.handed_out and connection not in state.releasing:
                return  # already released or discarded
            state.checked_in(connection)
        _shutdown_socket(connection)
        if state is not None and connection in state.releasing:
            return
        _finish(connection)
        if pool.closed:
            return
        returning = asyncio.ensure_future(pool.putconn(connection))
        _forget(returning)
        if state is not None:
            state.discards.add(returning)
            returning.add_done_callback(state.discards.discard)
            if state.waiters:  # its turn: it waits in psycopg_pool for the replacement
                state.wake_one()

    async def close_pool(self, pool: AsyncPool) -> None:
        """Close ``pool`` gracefully.

        New acquires fail at once with :class:`psycopg_pool.PoolClosed`; then this waits, without
        a limit of its own (the core bounds it), until every handed-out connection was released,
        and closes the pool and its idle connections. Background workers get
        :data:`CLOSE_WORKERS_TIMEOUT` to finish their current job before they are cancelled.
        Cancelling this call leaves the pool to :meth:`terminate_pool`.
        """
        state = self._state(pool)
        if state is not None:
            state.closing = True
            state.fail_waiters(f"the pool {pool.name!r} is closing")
            await state.all_returned()
        await self._shut(pool, state, CLOSE_WORKERS_TIMEOUT)

    async def terminate_pool(self, pool: AsyncPool) -> None:
        """Close ``pool`` and all of its connections at once, handed-out ones included.

        A handed-out connection's socket is shut down first, so a query running on it fails at
        once (``OperationalError``); the connection is then closed. Releasing it later is allowed
        and does nothing more. Nothing here waits on the server.
        """
        state = self._state(pool)
        if state is not None:
            state.closing = True
            state.fail_waiters(f"the pool {pool.name!r} was terminated")
            connections = list(state.handed_out)
            state.handed_out.clear()
            if state.returned is not None:
                state.returned.set()
            if sum(_shutdown_socket(conn) for conn in connections):
                # Let tasks blocked on those sockets see end-of-file and stop watching them.
                for _ in range(3):
                    await asyncio.sleep(0)
            for conn in connections:
                _finish(conn)
        await self._shut(pool, state, TERMINATE_WORKERS_TIMEOUT)

    async def _shut(
        self, pool: AsyncPool, state: _PoolState | None, workers_timeout: float
    ) -> None:
        """Close ``pool`` (once, shielded from cancellation) and make sure its tasks are gone.

        psycopg_pool's ``close()`` takes the idle connections out of the pool, waits up to
        ``workers_timeout`` for its tasks, then closes those connections: cancelled half-way it
        would leave them open, hence the shield. Tasks still busy afterwards (a worker connecting
        to a hung host) are cancelled; psycopg_pool's workers absorb that and stop.
        """
        if state is None:
            await pool.close(timeout=workers_timeout)
            return
        if state.close_task is None:
            state.close_task = asyncio.ensure_future(pool.close(timeout=workers_timeout))
            _forget(state.close_task)
        await asyncio.shield(state.close_task)
        busy = [task for task in state.workers if not task.done()]
        for task in busy:
            task.cancel()
        if busy:
            await asyncio.wait(busy, timeout=TASK_END_TIMEOUT)
        state.workers.clear()
        self._pools.pop(pool, None)

    async def expire_idle(self, pool: AsyncPool) -> None:
        """Close the pool's idle connections and open new ones (``pool.drain()``).

        Connections handed out now are closed when they are released instead of going back to
        the pool. Used when the host stops being the primary, so no connection opened while it
        was writable is handed out again. Does nothing on a closed pool.
        """
        if pool.closed:
            return
        await pool.drain()

    def pool_stats(self, pool: AsyncPool) -> PoolStats:
        """The pool's size figures, from ``pool.get_stats()`` and the driver's own count.

        ``min``/``max`` are the pool's bounds, ``size`` psycopg_pool's ``pool_size`` (connections
        open, plus ones being opened or returned), ``idle`` its ``pool_available`` and ``in_use``
        the connections this driver handed out and did not take back yet. At rest ``size`` is
        ``idle + in_use``. No I/O.
        """
        stats = pool.get_stats()
        size = stats["pool_size"]
        idle = stats["pool_available"]
        state = self._state(pool)
        in_use = len(state.handed_out) if state is not None else max(size - idle, 0)
        return PoolStats(
            min=stats["pool_min"], max=stats["pool_max"], size=size, idle=idle, in_use=in_use
        )

    def free_size(self, pool: AsyncPool) -> int:
        """``max_size`` minus the connections handed out: the contract's ``free`` at rest, without
        building the statistics dict."""
        state = self._state(pool)
        if state is None:
            return self.pool_stats(pool).free
        return max(pool.max_size - len(state.handed_out), 0)

    # -- connections ---------------------------------------------------------------------------

    def is_connection_closed(self, connection: AsyncConn) -> bool:
        """True when ``connection`` is closed, by the client or because it broke."""
        return connection.closed

    def error_facts(self, error: BaseException) -> ErrorFacts:
        """The facts of ``error``, following its explicit ``__cause__`` chain to the first one
        that carries any (a :class:`PsycopgPoolTimeout` or a wrapper of the user's).

        - a ``psycopg.Error`` gives its ``sqlstate``; an ``OperationalError`` without one (the
          connection broke or could not be made) is a lost connection;
        - an ``OSError`` is a lost connection;
        - psycopg_pool's own errors and timeouts carry no facts: the pool, not the host, said no.
        """
        current: BaseException | None = error
        for _ in range(8):
            if current is None:
                break
            facts = _facts_of_one(current)
            if facts != _NO_FACTS:
                return facts
            current = current.__cause__
        return _NO_FACTS

    # -- the monitor connection ----------------------------------------------------------------

    async def connect_monitor(self, dsn: Dsn, timeout: float) -> AsyncConn:
        """Open an autocommit ``AsyncConnection`` to ``dsn``'s host, within ``timeout`` seconds.

        Autocommit is what keeps every probe on a fresh snapshot: in a transaction begun during
        recovery, ``transaction_read_only`` stays on after a promotion. The connection's
        ``application_name`` is :data:`MONITOR_APPLICATION_NAME` unless the DSN sets one. On
        timeout raises :class:`asyncio.TimeoutError`; a connection completed after that is closed.
        """
        overrides = {"connect_timeout": str(max(2, math.ceil(timeout)))}
        if "application_name" not in dsn.options():
            overrides["application_name"] = MONITOR_APPLICATION_NAME
        connecting = asyncio.ensure_future(
            psycopg.AsyncConnection.connect(self.conninfo(dsn, **overrides), autocommit=True)
        )
        try:
            done, _ = await asyncio.wait({connecting}, timeout=timeout)
        except BaseException:
            await _abandon(connecting)
            raise
        if not done:
            await _abandon(connecting)
            raise asyncio.TimeoutError(
                f"connecting to {dsn.hosts[0]} took longer than {timeout:g} s"
            )
        return connecting.result()

    async def probe(self, connection: AsyncConn, query: str) -> Sequence[Any]:
        """Run ``query`` on the monitor connection; return its first row as a tuple.

        Cancellation returns at once even when the server is hung: the query runs in a child task,
        and a cancelled probe shuts the connection's socket down (so the child ends with an error
        within a loop iteration) instead of letting psycopg try to cancel the query on the server
        first. The connection is unusable afterwards; the core closes it.
        """
        task = asyncio.ensure_future(self._fetch_row(connection, query))
        _forget(task)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                _shutdown_socket(connection)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=TASK_END_TIMEOUT)
            raise

    @staticmethod
    async def _fetch_row(connection: AsyncConn, query: str) -> tuple[Any, ...]:
        cursor = await connection.execute(query)
        row = await cursor.fetchone()
        if row is None:
            raise psycopg.ProgrammingError("the probe query returned no row")
        return tuple(row)

    async def close_monitor(self, connection: AsyncConn) -> None:
        """Close a monitor connection on the client side; never waits for the server.

        libpq sends the server a termination message if the socket takes it at once, and closes
        the socket; nothing is awaited.
        """
        await connection.close()


class PsycopgAliasDriver(PsycopgDriver):
    """The same driver under the name ``psycopg``."""

    name: ClassVar[str] = "psycopg"
