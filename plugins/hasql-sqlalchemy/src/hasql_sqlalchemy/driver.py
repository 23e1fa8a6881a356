"""The ``asyncsqlalchemy`` driver (alias ``sqlalchemy``): one SQLAlchemy ``AsyncEngine`` per host.

Pools are :class:`~sqlalchemy.ext.asyncio.AsyncEngine` objects made by
:func:`~sqlalchemy.ext.asyncio.create_async_engine` with the user's ``pool_factory_kwargs``
(``pool_size``, ``max_overflow``, ``pool_pre_ping``, ``pool_recycle``, ``echo``, ...);
connections handed out are :class:`~sqlalchemy.ext.asyncio.AsyncConnection` objects
(``await engine.connect()``), given back with ``close()``. The dialect follows the DSN's scheme
(see :mod:`hasql_sqlalchemy._url`).

SQLAlchemy behaviour this driver works around (each one checked against real servers):

- Everything SQLAlchemy does on a connection that is interrupted (a cancelled statement, a cancelled
  ``close()``) invalidates the connection, and invalidating an asyncpg connection inside SQLAlchemy
  first tries a graceful close that waits up to 2 s for the server; psycopg itself waits up to about
  10 s for a cancel request. So a release runs in a task of its own that the caller awaits through a
  shield: cancelling the caller returns at once, and :meth:`AsyncSqlalchemyDriver.discard` then
  ends the release by closing its socket.
- Invalidated connections leave empty slots in the pool that SQLAlchemy still counts as checked
  in, so ``size() + overflow()`` over-counts open connections: the driver counts open connections
  itself through the pool's ``connect``/``close``/``detach`` events. A connection whose connect
  hooks fail (a cancellation during the dialect's set-up queries) is closed by SQLAlchemy without
  a ``close`` event, so connections whose library connection is closed are left out when the
  statistics are read.
- psycopg's ``connect()`` cancelled mid-handshake leaves the libpq connection to the garbage
  collector (the server session, already authenticated, stays idle meanwhile, in no pool's count):
  the psycopg dialect connects through a subclass whose ``connect()`` closes it at once.
- Closing a connection without waiting on the server is not offered for every dialect
  (``AsyncConnection.invalidate()`` waits as above; the psycopg dialect has no ``terminate``), so
  :meth:`~AsyncSqlalchemyDriver.discard` closes the socket of the library's own connection first
  (asyncpg ``terminate()``, a ``shutdown()`` of psycopg's socket); SQLAlchemy's invalidation that
  follows then has nothing left to wait for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import gc
import logging
import os
import select
import socket
import weakref
from collections.abc import Coroutine, Generator, Mapping, Sequence
from typing import Any, ClassVar

import sqlalchemy.exc as sa_exc
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool, QueuePool

from hasql_core.driver import Driver, ErrorFacts, PoolStats
from hasql_core.dsn import Dsn
from hasql_core.errors import ConfigurationError, HasqlError

from ._url import DEFAULT_DIALECT, dialect_of, engine_arguments

try:  # either dialect's library may be missing: only the one a DSN names is needed
    import asyncpg
    import asyncpg.exceptions
except ImportError:  # pragma: no cover - depends on what is installed
    asyncpg = None
try:
    import psycopg
    import psycopg.errors
except ImportError:  # pragma: no cover - depends on what is installed
    psycopg = None  # type: ignore[assignment]

__all__ = [
    "AsyncSqlalchemyDriver",
    "SqlalchemyDriver",
    "SqlalchemyPoolClosed",
    "SqlalchemyPoolTimeout",
    "sqlalchemy_error_facts",
]

log = logging.getLogger("hasql_sqlalchemy")

#: ``PoolStats.max`` of a pool without a limit (``max_overflow=-1``, ``NullPool``).
UNLIMITED = 2**31 - 1
#: SQLAlchemy's default ``max_overflow`` of a ``QueuePool`` (``create_engine`` documents it).
DEFAULT_MAX_OVERFLOW = 10
#: Upper bound on waiting for an abandoned task (a cancelled connect or probe) to end after its
#: socket was closed; it ends within a loop iteration or two, the bound guards a library change.
TASK_END_TIMEOUT = 0.5
#: How long a cancelled :meth:`AsyncSqlalchemyDriver.open_pool` lets connections being made finish
#: (a healthy server answers in milliseconds; a frozen one is cut off after this).
OPEN_GRACE = 0.25
#: ``application_name`` of monitor connections, unless the DSN or ``connect_args`` name one.
MONITOR_APPLICATION_NAME = "hasql-monitor"


class SqlalchemyPoolTimeout(HasqlError, asyncio.TimeoutError):
    """SQLAlchemy's pool gave no connection within its ``pool_timeout``.

    Raised by :meth:`AsyncSqlalchemyDriver.acquire` in place of :class:`sqlalchemy.exc.TimeoutError`
    (chained as ``__cause__``); being an :class:`asyncio.TimeoutError`, the core reports it as its
    own acquire timeout.
    """


class SqlalchemyPoolClosed(HasqlError, RuntimeError):
    """An acquire from a pool that :meth:`~AsyncSqlalchemyDriver.close_pool` or
    :meth:`~AsyncSqlalchemyDriver.terminate_pool` began to close."""


# -- running a coroutine to its end whatever happens to the caller -----------------------------------


def _wake(waiter: asyncio.Future[None], _: object) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _carry_on(coro: Coroutine[Any, Any, None], pending: Any) -> None:
    """Drive ``coro``, suspended on ``pending`` (a future, or None for a bare yield), to its end,
    the way an asyncio task would."""
    loop = asyncio.get_running_loop()
    while True:
        if pending is None:
            await asyncio.sleep(0)
        else:
            pending._asyncio_future_blocking = False
            if not pending.done():
                waiter: asyncio.Future[None] = loop.create_future()
                pending.add_done_callback(lambda _f, w=waiter: _wake(w, None))
                try:
                    await waiter
                except asyncio.CancelledError:  # the loop is closing: pass it on, as a task would
                    pending.cancel()
        try:
            pending = coro.send(None)
        except StopIteration:
            return


def _start(coro: Coroutine[Any, Any, None]) -> asyncio.Future[None] | None:
    """Run ``coro`` up to its first suspension, in the caller's frame; return None when it finished
    there, else a task that runs the rest (nobody's cancellation reaches it).

    SQLAlchemy's ``close()`` of a connection without an open transaction, and its invalidation of a
    connection whose socket is closed, usually finish without suspending: no task is made then.
    An exception raised before the first suspension propagates.
    """
    try:
        pending = coro.send(None)
    except StopIteration:
        return None
    return asyncio.ensure_future(_carry_on(coro, pending))


def _retrieve(task: asyncio.Future[Any]) -> None:
    """Done callback: fetch a background task's outcome so asyncio logs nothing about it."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("background cleanup of a connection ended with %r", task.exception())


# -- the library's own connection under an AsyncConnection --------------------------------------------


def _driver_connection(connection: AsyncConnection) -> Any | None:
    """asyncpg's or psycopg's connection under ``connection``, or None when SQLAlchemy already let
    go of it (closed, invalidated, never started). No I/O, never reconnects."""
    sync = connection.sync_connection
    if sync is None or sync.closed or sync.invalidated:
        return None
    try:
        return sync.connection.driver_connection
    except (AttributeError, sa_exc.SQLAlchemyError):
        return None


def _shutdown_fd(fd: int) -> None:
    """Shut a socket down both ways without closing its descriptor: a task waiting on it wakes up
    at once and sees end-of-file, and the library then closes it itself."""
    try:
        with socket.socket(fileno=os.dup(fd)) as sock:
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _close_socket(raw: Any, *, someone_waits: bool) -> None:
    """Close the socket of the library connection ``raw`` without a word to the server.

    asyncpg's ``terminate()`` aborts the transport (the event loop stops watching it; awaiting
    operations fail at once). For psycopg the socket is shut down, so a task waiting on it wakes up;
    when no task waits (``someone_waits`` False), libpq's connection is closed too.
    """
    if asyncpg is not None and isinstance(raw, asyncpg.Connection):
        raw.terminate()
        return
    if psycopg is not None and isinstance(raw, psycopg.AsyncConnection):
        try:
            fd = raw.pgconn.socket
        except psycopg.Error:  # already closed
            return
        _shutdown_fd(fd)
        if not someone_waits:
            raw.pgconn.finish()
        return
    # Another async driver: its own close, without waiting for it.
    terminate = getattr(raw, "terminate", None)
    if callable(terminate):
        terminate()


def _readable(fd: int) -> bool:
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


def _closed_by_server(raw: Any) -> bool:
    """Whether the server closed the idle library connection ``raw``; no round trip.

    asyncpg reads its socket all the time, so it knows (``is_closed()``). psycopg reads only when
    asked: an idle connection whose socket is readable got something unasked (a termination
    message and end-of-file, or a harmless notification), and libpq reading it tells which.
    """
    if asyncpg is not None and isinstance(raw, asyncpg.Connection):
        return bool(raw.is_closed())
    if psycopg is not None and isinstance(raw, psycopg.AsyncConnection):
        pgconn = raw.pgconn
        if raw.closed:
            return True
        try:
            # A termination message and the end-of-file may need two reads; a notification
            # leaves nothing more to read.
            for _ in range(3):
                if not _readable(pgconn.socket):
                    break
                pgconn.consume_input()
                pgconn.is_busy()
        except (psycopg.Error, OSError):
            return True
        return bool(raw.closed) or bool(raw.broken)
    return False


def _raw_is_closed(raw: Any) -> bool:
    if asyncpg is not None and isinstance(raw, asyncpg.Connection):
        return bool(raw.is_closed())
    if psycopg is not None and isinstance(raw, psycopg.AsyncConnection):
        return bool(raw.closed)
    return False


def _dbapi_is_closed(dbapi_connection: Any) -> bool:
    """Whether the library connection under SQLAlchemy's DBAPI adapter ``dbapi_connection`` is
    closed; no I/O."""
    raw = getattr(dbapi_connection, "driver_connection", None)
    return raw is not None and _raw_is_closed(raw)


async def _finish(connection: AsyncConnection) -> None:
    """Invalidate ``connection`` (its slot goes back to the pool, empty) and close it. Called after
    its socket was closed, so neither step waits on the server."""
    try:
        if not connection.invalidated and not connection.closed:
            await connection.invalidate()
    finally:
        await connection.close()


def _forget_now(connection: AsyncConnection) -> asyncio.Future[None] | None:
    """Invalidate and close ``connection``, whose socket is closed, and free its pool slot: at once
    when the dialect can terminate a connection outside SQLAlchemy's greenlet (asyncpg: SQLAlchemy's
    synchronous ``invalidate()`` then force-closes it), else by running :func:`_finish` (psycopg:
    closing an already closed connection finishes without suspending). Returns the task still
    running, if any."""
    sync = connection.sync_connection
    if sync is None:
        return None
    if getattr(sync.dialect, "has_terminate", False):
        if not sync.closed and not sync.invalidated:
            sync.invalidate()
        sync.close()
        return None
    return _start(_finish(connection))


#: Cleanups of connections still running in the background (a release the core stopped waiting
#: for, a discard that could not finish at once), so a session can wait for its connection to be
#: let go before it tidies up itself (see :func:`settled`).
_CLEANUPS: weakref.WeakKeyDictionary[AsyncConnection, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary()
)


def _track(connection: AsyncConnection, task: asyncio.Future[None]) -> None:
    _CLEANUPS[connection] = task

    def untrack(_: object) -> None:
        if _CLEANUPS.get(connection) is task:
            del _CLEANUPS[connection]

    task.add_done_callback(untrack)


async def settled(connection: AsyncConnection, timeout: float = TASK_END_TIMEOUT) -> bool:
    """Wait (at most ``timeout`` seconds) until no cleanup of ``connection`` runs in the
    background; True when none does. Cancelling the caller stops the wait only."""
    task = _CLEANUPS.get(connection)
    if task is None or task.done():
        return True
    done, _ = await asyncio.wait({task}, timeout=timeout)
    return bool(done)


def _on_interrupted(context: Any) -> None:
    """``handle_error`` listener: a statement, commit or rollback interrupted by a cancellation
    (``asyncio.wait_for`` ran out, the task was cancelled) makes SQLAlchemy invalidate the
    connection, and for asyncpg that first waits up to 2 s for a graceful close; the socket is
    closed here first, so the invalidation has nothing to wait for."""
    if isinstance(context.original_exception, Exception) or context.connection is None:
        return
    raw = _driver_connection_of_sync(context.connection)
    if raw is not None:
        _close_socket(raw, someone_waits=True)


def _driver_connection_of_sync(sync: Any) -> Any | None:
    if sync.closed or sync.invalidated:
        return None
    try:
        return sync.connection.driver_connection
    except (AttributeError, sa_exc.SQLAlchemyError):
        return None


def _cut_interrupted_statements_short(engine: AsyncEngine) -> None:
    event.listen(engine.sync_engine, "handle_error", _on_interrupted)


#: How long an interrupted statement waits for psycopg's cancel request to be taken (psycopg waits
#: up to about ten seconds on a frozen host); after that the request goes on in the background,
#: the socket is shut down and the statement given up. A live server takes it in milliseconds.
CANCEL_WAIT = 0.25
#: The background cancel request's own bound.
CANCEL_TIMEOUT = 5.0
#: Cancel requests still running in the background (kept referenced until they end).
_CANCELLING: set[asyncio.Future[None]] = set()


def bounded_cancel_connection_class() -> type[Any]:
    """A subclass of ``psycopg.AsyncConnection`` whose interrupted statements wait at most
    :data:`CANCEL_WAIT` for their cancel request and whose ``connect()`` closes a half-made
    connection when it is interrupted; the psycopg dialect makes its connections with it (through
    ``connect_args["async_creator_fn"]``) unless the user gives a creator of their own."""
    if psycopg is None:  # pragma: no cover
        raise ConfigurationError("the psycopg dialect needs psycopg: pip install 'psycopg[binary]'")
    return _bounded_cancel_class(psycopg.AsyncConnection)


#: The handshakes (psycopg's connection generators) started by the ``connect()`` running in this
#: task; see ``BoundedCancelAsyncConnection.connect``.
_HANDSHAKES: contextvars.ContextVar[list[Generator[Any, Any, Any]] | None] = contextvars.ContextVar(
    "hasql_sqlalchemy_handshakes", default=None
)


def _end_handshakes(handshakes: list[Generator[Any, Any, Any]]) -> None:
    """Close psycopg connection generators left suspended mid-handshake: closing one drops the
    only reference to its libpq connection, which libpq then closes (a finished generator is left
    as it is)."""
    for handshake in handshakes:
        try:
            handshake.close()
        except Exception as error:  # pragma: no cover - a library change
            log.debug("closing an interrupted psycopg handshake: %r", error)


@functools.cache
def _bounded_cancel_class(base: type[Any]) -> type[Any]:
    class BoundedCancelAsyncConnection(base):  # type: ignore[misc]
        @classmethod
        async def connect(cls, *args: Any, **kwargs: Any) -> Any:
            """psycopg's ``connect()``, except that a handshake it leaves unfinished (cancelled,
            or given up at ``connect_timeout``) is closed at once.

            psycopg drives the handshake with a generator holding the libpq connection and, when
            the wait is interrupted, leaves that generator suspended in the frames of the
            exception's traceback: the server session (already past authentication, idle)
            lives until the garbage collector breaks the cycle, outside every pool's count.
            """
            handshakes: list[Generator[Any, Any, Any]] = []
            token = _HANDSHAKES.set(handshakes)
            try:
                return await super().connect(*args, **kwargs)
            finally:
                _end_handshakes(handshakes)
                with contextlib.suppress(ValueError):  # closed outside the task that ran it
                    _HANDSHAKES.reset(token)

        @classmethod
        def _connect_gen(cls, *args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            handshake: Generator[Any, Any, Any] = super()._connect_gen(*args, **kwargs)
            handshakes = _HANDSHAKES.get()
            if handshakes is not None:
                handshakes.append(handshake)
            return handshake

        async def cancel_safe(self, *, timeout: float = 30.0) -> None:
            request = asyncio.ensure_future(
                super().cancel_safe(timeout=min(timeout, CANCEL_TIMEOUT) if timeout else 0)
            )
            request.add_done_callback(_retrieve)
            _CANCELLING.add(request)
            request.add_done_callback(_CANCELLING.discard)
            done, _ = await asyncio.wait({request}, timeout=CANCEL_WAIT)
            if request in done:
                request.result()
                return
            with contextlib.suppress(psycopg.Error):
                _shutdown_fd(self.pgconn.socket)
            raise psycopg.errors.CancellationTimeout(
                f"the server did not take the cancel request within {CANCEL_WAIT:g}s; the "
                "connection was shut down (the request goes on in the background)"
            )

    return BoundedCancelAsyncConnection


# -- error facts --------------------------------------------------------------------------------------


def _lost_library_error(error: BaseException) -> bool:
    """Whether an exception of asyncpg, psycopg or the network says the connection is gone."""
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return False  # a statement's own time limit; TimeoutError is an OSError on >= 3.11
    if asyncpg is not None:
        if isinstance(error, asyncpg.exceptions.ConnectionDoesNotExistError):
            return True
        if isinstance(error, asyncpg.exceptions.InterfaceError):
            return str(error).startswith("connection is closed")
    if (
        psycopg is not None
        and isinstance(error, psycopg.OperationalError)
        and getattr(error, "sqlstate", None) is None
    ):
        return True
    return isinstance(error, OSError)


def _closed_under_us(error: BaseException) -> bool:
    """SQLAlchemy's errors for a statement on a connection that was closed or invalidated while
    handed out (by :meth:`AsyncSqlalchemyDriver.discard` or ``terminate_pool``, or after the
    library found it broken mid-transaction)."""
    if isinstance(error, sa_exc.ResourceClosedError):
        return str(error).startswith("This Connection is closed")
    if isinstance(error, sa_exc.PendingRollbackError):
        return str(error).startswith("Can't reconnect until invalid transaction")
    return False


def _sqlstate(error: BaseException) -> str | None:
    value = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    return value if isinstance(value, str) and len(value) == 5 else None


def sqlalchemy_error_facts(error: BaseException) -> ErrorFacts:
    """The facts of an exception raised through SQLAlchemy by the asyncpg or psycopg dialect.

    SQLAlchemy wraps the library's exception in a :class:`sqlalchemy.exc.DBAPIError`: its
    ``connection_invalidated`` says SQLAlchemy found the connection gone (the dialect's own
    disconnect check), and ``orig`` is the library's exception (for asyncpg, SQLAlchemy's adapter
    exception carrying asyncpg's ``sqlstate``, with asyncpg's exception as its ``__cause__``). The
    chain ``orig`` / ``__cause__`` is followed to the first SQLSTATE:

    - the SQLSTATE the server sent (``25006`` for a write on a standby, ``57P01`` for
      ``pg_terminate_backend``, ...), from ``sqlstate`` (or ``pgcode``);
    - a lost connection: ``connection_invalidated``, SQLAlchemy's "This Connection is closed" and
      "Can't reconnect until invalid transaction is rolled back" (a statement on a connection
      closed or invalidated under its user), asyncpg's ``ConnectionDoesNotExistError`` or
      ``InterfaceError("connection is closed")``, psycopg's ``OperationalError`` without SQLSTATE,
      an ``OSError``;
    - SQLAlchemy's pool timeout, this driver's :class:`SqlalchemyPoolTimeout`, timeouts and
      everything else carry no facts.
    """
    lost = False
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            break
        if isinstance(current, (SqlalchemyPoolTimeout, sa_exc.TimeoutError)):
            return ErrorFacts()
        if isinstance(current, sa_exc.DBAPIError):
            lost = lost or bool(current.connection_invalidated)
            orig = current.orig
            current = orig if isinstance(orig, BaseException) else current.__cause__
            continue
        if isinstance(current, sa_exc.DisconnectionError) or _closed_under_us(current):
            lost = True
        sqlstate = _sqlstate(current)
        lost = lost or _lost_library_error(current)
        if sqlstate is not None:
            return ErrorFacts(sqlstate=sqlstate, connection_lost=lost)
        current = current.__cause__
    return ErrorFacts(connection_lost=lost)


# -- per-pool bookkeeping -----------------------------------------------------------------------------


class _PoolState:
    """What the driver keeps per engine: slots held, open connections, closing state."""

    __slots__ = (
        "all_returned",
        "background",
        "closing",
        "engine",
        "generation",
        "max",
        "min",
        "open",
        "out",
        "releasing",
        "watching_checkouts",
    )

    def __init__(self, engine: AsyncEngine, maximum: int) -> None:
        self.engine = engine  # keeps id(engine) unique while the state is registered
        self.max = maximum
        #: Connections opened with the pool (``pool_size`` when prefilled, else 0).
        self.min = 0
        #: AsyncConnections whose pool slot is held: handed out, or being released.
        self.out: set[AsyncConnection] = set()
        #: The close() task of each connection whose release is in flight.
        self.releasing: dict[AsyncConnection, asyncio.Future[None]] = {}
        #: The library connections the pool holds open (from the pool's events).
        self.open: set[Any] = set()
        self.closing = False
        self.all_returned: asyncio.Event | None = None
        self.background: set[asyncio.Future[None]] = set()
        #: Bumped by expire_idle(); connections opened in an older generation are replaced.
        self.generation = 0
        self.watching_checkouts = False

    def returned(self, connection: AsyncConnection) -> None:
        self.out.discard(connection)
        if not self.out and self.all_returned is not None:
            self.all_returned.set()

    def keep(self, task: asyncio.Future[None]) -> None:
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        task.add_done_callback(_retrieve)


_GENERATION = "hasql_generation"


class AsyncSqlalchemyDriver(Driver[AsyncEngine, AsyncConnection, AsyncConnection]):
    """hasql-core driver for SQLAlchemy 2 asyncio: an ``AsyncEngine`` per host.

    ``pool_factory_kwargs`` are keyword arguments of :func:`sqlalchemy.ext.asyncio.create_async_engine`
    (``pool_size``, ``max_overflow``, ``pool_timeout``, ``pool_pre_ping``, ``pool_recycle``,
    ``connect_args``, ``echo``, ``execution_options``, ``poolclass``, ...), passed to every host's
    engine as given: the dict is copied, never modified, and ``pool_size=10, max_overflow=5``
    means at most 15 connections per host (the health checks use a separate connection per host).
    The DSN's parameters become ``connect_args`` (asyncpg) or URL query parameters (psycopg); the
    user's ``connect_args`` win, ``server_settings`` are merged key by key.

    Connections handed out are ``AsyncConnection`` objects in SQLAlchemy's usual mode (a
    transaction begins with the first statement; ``await conn.commit()`` ends it); releasing one
    closes it, which rolls back an open transaction and returns it to the engine's pool.

    One instance serves one pool manager and keeps per-engine state.
    """

    name: ClassVar[str] = "asyncsqlalchemy"
    #: The dialect of DSNs whose scheme names none (``postgresql://``, key=value DSNs).
    default_dialect: ClassVar[str] = DEFAULT_DIALECT

    #: Whether :meth:`open_pool` opens the ``pool_size`` connections of a new pool at once.
    prefill: ClassVar[bool] = True

    def __init__(self, default_dialect: str | None = None, *, prefill: bool | None = None) -> None:
        """``default_dialect``: the SQLAlchemy dialect driver (``"asyncpg"``, ``"psycopg"``) for
        DSNs whose scheme names none; a ``postgresql+<driver>://`` scheme always wins.
        ``prefill``: see :meth:`open_pool` (default True)."""
        self._dialect = default_dialect or self.default_dialect
        self._prefill = self.prefill if prefill is None else prefill
        self._states: dict[int, _PoolState] = {}
        self._monitor_engines: dict[Dsn, AsyncEngine] = {}

    def _state(self, engine: AsyncEngine) -> _PoolState | None:
        return self._states.get(id(engine))

    # -- pools ---------------------------------------------------------------------------------------

    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> AsyncEngine:
        """Make the ``AsyncEngine`` of ``dsn``'s host; connects nothing.

        Raises :class:`~hasql_core.errors.ConfigurationError` for a dialect without asyncio
        support (``postgresql+psycopg2``) or options SQLAlchemy refuses.
        """
        url, kwargs = engine_arguments(dsn, pool_options, self._dialect)
        try:
            engine = create_async_engine(url, **kwargs)
        except (sa_exc.ArgumentError, sa_exc.InvalidRequestError, TypeError) as error:
            raise ConfigurationError(
                f"SQLAlchemy refused the engine for {dsn.hosts[0]} "
                f"(dialect postgresql+{dialect_of(dsn, self._dialect)}): {error}. Use an asyncio dialect "
                "(postgresql+asyncpg:// or postgresql+psycopg://) and create_async_engine() "
                "arguments in pool_factory_kwargs."
            ) from error
        _cut_interrupted_statements_short(engine)
        state = _PoolState(engine, self._maximum(engine, pool_options))
        sa_pool = engine.sync_engine.pool
        if self._prefill and isinstance(sa_pool, QueuePool):
            state.min = min(int(sa_pool.size()), state.max)
        self._states[id(engine)] = state
        pool = engine.sync_engine.pool

        # insert=True: counted before the dialect's own connect hooks run, which may fail (or be
        # cancelled); SQLAlchemy then closes the connection without a close event, and
        # pool_stats() leaves it out as closed.
        def on_connect(dbapi_connection: Any, record: Any) -> None:
            state.open.add(dbapi_connection)
            record.info[_GENERATION] = state.generation

        def on_close(dbapi_connection: Any, record: Any) -> None:
            state.open.discard(dbapi_connection)

        event.listen(pool, "connect", on_connect, insert=True)
        event.listen(pool, "close", on_close)
        event.listen(pool, "detach", on_close)
        return engine

    @staticmethod
    def _maximum(engine: AsyncEngine, options: Mapping[str, Any]) -> int:
        pool = engine.sync_engine.pool
        if isinstance(pool, QueuePool):
            overflow = int(options.get("max_overflow", DEFAULT_MAX_OVERFLOW))
            if overflow < 0 or pool.size() <= 0:  # SQLAlchemy: no limit
                return UNLIMITED
            return int(pool.size()) + overflow
        size = getattr(pool, "size", None)
        if not isinstance(pool, NullPool) and callable(size):
            return int(size())
        return UNLIMITED

    async def open_pool(self, pool: AsyncEngine) -> None:
        """Open ``pool_size`` connections at once and put them in the pool (``prefill``).

        SQLAlchemy opens connections only when they are asked for; hasql-core opens a host's
        pool when it first sees the host, so opening the ``pool_size`` connections a
        ``QueuePool`` keeps (asyncpg's ``min_size``, in effect) makes the first acquires after a
        failover fast and lets a dead host show up before any request needs it. With
        ``prefill=False`` (or a pool without a size, such as ``NullPool``) nothing is opened.
        On failure or cancellation every connection opened so far goes back to the pool and the
        error propagates (the core then terminates the pool).
        """
        state = self._state(pool)
        if state is None or state.min <= 0:
            return
        opening = [asyncio.ensure_future(pool.connect().start()) for _ in range(state.min)]
        try:
            await asyncio.gather(*opening)
        finally:
            pending = [task for task in opening if not task.done()]
            if pending:
                # Connections being made are let finish for a moment rather than cut off
                # mid-way: a library connect cancelled just as the server accepted it can leave
                # the session open until the garbage collector finds it (psycopg's own
                # connect(), when the user gives a creator in place of the driver's).
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(pending, timeout=OPEN_GRACE)
                pending = [task for task in pending if not task.done()]
            for task in pending:
                task.cancel()
            if pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait(pending, timeout=TASK_END_TIMEOUT)
                # psycopg's own connect() leaves a connection whose handshake was cancelled in
                # a reference cycle: its session stays open until a collection finds it (the
                # driver's creator closes it at once; a user's creator may not).
                gc.collect()
            for task in opening:
                if task.done() and not task.cancelled() and task.exception() is None:
                    closing = _start(task.result().close())  # no transaction: no I/O
                    if closing is not None:
                        state.keep(closing)
                elif not task.done():
                    task.add_done_callback(self._close_if_connected)

    async def acquire(
        self, pool: AsyncEngine, timeout: float | None, **kwargs: Any
    ) -> AsyncConnection:
        """``await engine.connect()``: an ``AsyncConnection`` from the engine's pool.

        ``timeout`` is not passed on (``connect()`` takes none; the core cancels this call at its
        deadline). When the pool's own ``pool_timeout`` passes first, :class:`SqlalchemyPoolTimeout`
        is raised. Acquire arguments are refused (``TypeError``): SQLAlchemy's ``connect()`` takes
        none. Cancellation-safe: SQLAlchemy returns the slot when the checkout is interrupted,
        and once the connection is made this returns without awaiting again.
        """
        if kwargs:
            raise TypeError(
                f"the {self.name} driver takes no acquire arguments, got {sorted(kwargs)}"
            )
        state = self._state(pool)
        if state is not None and state.closing:
            raise SqlalchemyPoolClosed(f"the pool of {pool.url.host}:{pool.url.port} is closing")
        attempts = 0
        while True:
            try:
                connection = await pool.connect()
            except sa_exc.TimeoutError as error:
                raise SqlalchemyPoolTimeout(
                    f"no connection of {pool.url.host}:{pool.url.port} became free within the "
                    f"engine's pool_timeout: {error}"
                ) from error
            raw = _driver_connection(connection)
            if raw is None or not _closed_by_server(raw):
                break
            # The server ended this idle session (restart, pg_terminate_backend): never hand it
            # out; SQLAlchemy forgets it and the next try takes another or connects anew.
            _close_socket(raw, someone_waits=False)
            finishing = _forget_now(connection)
            if finishing is not None and state is not None:
                state.keep(finishing)
            attempts += 1
            if attempts > 2 and state is not None and attempts > state.max:
                raise sa_exc.DisconnectionError(
                    f"the server closed every idle connection of {pool.url.host}:{pool.url.port}"
                )
        if state is not None:
            state.out.add(connection)
            if state.all_returned is not None:
                state.all_returned.clear()
        return connection

    async def release(self, pool: AsyncEngine, connection: AsyncConnection, **kwargs: Any) -> None:
        """``await connection.close()``: roll back an open transaction, return it to the pool.

        The close runs in a task of its own (only when it has to wait: without an open transaction
        it finishes at once), awaited through a shield: cancelling the caller returns at once and
        leaves the close running, and :meth:`discard` ends it without losing the slot. A close that
        fails (the server went away) leaves the connection discarded, its slot free, and raises.
        Releasing a connection twice does nothing.
        """
        if kwargs:
            raise TypeError(
                f"the {self.name} driver takes no release arguments, got {sorted(kwargs)}"
            )
        state = self._state(pool)
        if state is None:
            await connection.close()
            return
        if connection not in state.out or connection in state.releasing:
            return
        closing = _start(connection.close())
        if closing is None:
            state.returned(connection)
            return
        state.releasing[connection] = closing
        _track(connection, closing)

        def done(task: asyncio.Future[None]) -> None:
            state.releasing.pop(connection, None)
            if task.cancelled() or task.exception() is not None:
                self.discard(pool, connection)  # its slot must not stay held
            state.returned(connection)

        closing.add_done_callback(done)
        await asyncio.shield(closing)

    def discard(self, pool: AsyncEngine, connection: AsyncConnection) -> None:
        """Close ``connection`` at once and free its slot; nothing waits on the server.

        The socket of the library's connection is closed first (asyncpg: ``terminate()``;
        psycopg: the socket is shut down). A release of the same connection in flight then fails
        at once inside SQLAlchemy, which invalidates the connection and returns its slot, empty;
        otherwise the connection is invalidated and closed here, which frees the slot within the
        call or a loop iteration later. The pool opens a new connection in that slot when it is
        next needed. A connection already released or discarded is left alone; never raises.
        """
        state = self._state(pool)
        if state is not None and connection not in state.out:
            return
        releasing = state.releasing.get(connection) if state is not None else None
        try:
            raw = _driver_connection(connection)
            if raw is not None:
                _close_socket(raw, someone_waits=releasing is not None)
            if state is not None:
                state.returned(connection)
            if releasing is not None:
                return  # the release in flight fails now and finishes the job (see release)
            finishing = _forget_now(connection)
        except Exception as error:  # the contract: never raise
            log.debug("discarding a connection of %s: %r", pool.url.host, error)
            return
        if finishing is not None:
            _track(connection, finishing)
            if state is not None:
                state.keep(finishing)
            else:
                finishing.add_done_callback(_retrieve)

    async def close_pool(self, pool: AsyncEngine) -> None:
        """Close gracefully: refuse new acquires, wait (without a limit of its own; the core
        bounds it) until every handed-out connection came back, then ``engine.dispose()``."""
        state = self._state(pool)
        if state is not None:
            state.closing = True
            if state.out:
                if state.all_returned is None:
                    state.all_returned = asyncio.Event()
                await state.all_returned.wait()
        await pool.dispose()
        self._forget(pool)

    async def terminate_pool(self, pool: AsyncEngine) -> None:
        """Close the engine's connections at once, handed-out ones (and a statement running on
        them) included, without waiting on any server; then ``engine.dispose()``, which then has
        no I/O left to do."""
        state = self._state(pool)
        if state is None:
            await pool.dispose()
            return
        state.closing = True
        handed_out = list(state.out)
        # Shut every socket first (a statement may be waiting on one: it fails at once), let the
        # waiting tasks see that, then let SQLAlchemy forget the handed-out connections.
        for raw in list(state.open):
            driver_connection = getattr(raw, "driver_connection", None)
            if driver_connection is not None and not _raw_is_closed(driver_connection):
                _close_socket(driver_connection, someone_waits=True)
        for _ in range(3):
            await asyncio.sleep(0)
        for connection in handed_out:
            self.discard(pool, connection)
        if state.background:
            await asyncio.wait(set(state.background), timeout=TASK_END_TIMEOUT)
        with contextlib.suppress(Exception):
            await pool.dispose()
        gc.collect()  # connections of cancelled connects (see open_pool)
        self._forget(pool)

    def _forget(self, pool: AsyncEngine) -> None:
        state = self._states.pop(id(pool), None)
        if state is not None:
            state.out.clear()
            if state.all_returned is not None:
                state.all_returned.set()

    async def expire_idle(self, pool: AsyncEngine) -> None:
        """Make every connection open now be replaced before it is handed out again.

        Connections carry the generation in which they were opened; a checkout of one from an
        older generation raises :class:`sqlalchemy.exc.DisconnectionError` inside the pool's
        ``checkout`` event, SQLAlchemy's own way to have the pool close it and connect anew.
        Handed-out connections are replaced after they come back. No I/O here.
        """
        state = self._state(pool)
        if state is None:
            return
        state.generation += 1
        if state.watching_checkouts:
            return
        state.watching_checkouts = True

        def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            if record.info.get(_GENERATION, -1) < state.generation:
                raise sa_exc.DisconnectionError(
                    "connection opened before its host changed role; replacing it"
                )

        event.listen(pool.sync_engine.pool, "checkout", on_checkout)

    def pool_stats(self, pool: AsyncEngine) -> PoolStats:
        """The engine pool's figures in the contract's meaning, overflow included.

        ``max`` is ``pool_size + max_overflow`` (``UNLIMITED`` for ``max_overflow=-1`` or a
        ``NullPool``), ``min`` the connections opened with the pool (``pool_size``, or 0 without
        ``prefill``), ``size`` the open
        connections (counted from the pool's events, less connections whose library connection
        is closed: slots SQLAlchemy emptied after an invalidation are not connections),
        ``in_use`` the connections handed out through this driver and not yet given back,
        ``idle`` the open connections waiting in the pool. No I/O.
        """
        state = self._state(pool)
        if state is None:
            return PoolStats(min=0, max=0, size=0, idle=0, in_use=0)
        # SQLAlchemy closes a connection whose connect hooks failed without a close event.
        state.open.difference_update([c for c in state.open if _dbapi_is_closed(c)])
        size = len(state.open)
        sa_pool = pool.sync_engine.pool
        checked_out = sa_pool.checkedout() if isinstance(sa_pool, QueuePool) else len(state.out)
        return PoolStats(
            min=state.min,
            max=state.max,
            size=size,
            idle=max(size - int(checked_out), 0),
            in_use=len(state.out),
        )

    def free_size(self, pool: AsyncEngine) -> int:
        """``max`` minus the connections handed out: the contract's ``free`` in O(1)."""
        state = self._state(pool)
        if state is None:
            return 0
        return max(state.max - len(state.out), 0)

    # -- connections ---------------------------------------------------------------------------------

    def is_connection_closed(self, connection: AsyncConnection) -> bool:
        """True when SQLAlchemy closed or invalidated ``connection``, or its socket is closed."""
        raw = _driver_connection(connection)
        return raw is None or _raw_is_closed(raw)

    def error_facts(self, error: BaseException) -> ErrorFacts:
        """See :func:`sqlalchemy_error_facts`."""
        return sqlalchemy_error_facts(error)

    # -- the monitor connection ----------------------------------------------------------------------

    def _monitor_engine(self, dsn: Dsn) -> AsyncEngine:
        """An engine without a pool (``NullPool``) in AUTOCOMMIT for the monitor of ``dsn``'s host,
        made once per host, with the dialect and connect arguments the DSN gives (the monitor
        connects before any pool exists, so ``pool_factory_kwargs`` do not reach it)."""
        engine = self._monitor_engines.get(dsn)
        if engine is not None:
            return engine
        url, kwargs = engine_arguments(dsn, {}, self._dialect)
        kwargs["poolclass"] = NullPool
        kwargs["isolation_level"] = "AUTOCOMMIT"
        url, kwargs = _with_monitor_name(url, kwargs, dialect_of(dsn, self._dialect))
        engine = create_async_engine(url, **kwargs)
        _cut_interrupted_statements_short(engine)
        self._monitor_engines[dsn] = engine
        return engine

    async def connect_monitor(self, dsn: Dsn, timeout: float) -> AsyncConnection:
        """Open a dedicated AUTOCOMMIT connection to ``dsn``'s host, outside every pool, within
        ``timeout`` seconds (``asyncio.TimeoutError`` after it; a connection made after all is
        closed). Every probe runs in its own implicit transaction, so none holds a snapshot."""
        engine = self._monitor_engine(dsn)
        connecting = asyncio.ensure_future(engine.connect().start())
        try:
            done, _ = await asyncio.wait({connecting}, timeout=timeout)
        except BaseException:
            await self._abandon(connecting)
            raise
        if not done:
            await self._abandon(connecting)
            raise asyncio.TimeoutError(
                f"connecting to {dsn.hosts[0]} took longer than {timeout:g} s"
            )
        return connecting.result()

    async def _abandon(self, connecting: asyncio.Future[AsyncConnection]) -> None:
        connecting.cancel()
        connecting.add_done_callback(self._close_if_connected)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait({connecting}, timeout=TASK_END_TIMEOUT)

    def _close_if_connected(self, task: asyncio.Future[AsyncConnection]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        self._close_now(task.result(), someone_waits=False)

    def _close_now(self, connection: AsyncConnection, *, someone_waits: bool) -> None:
        try:
            raw = _driver_connection(connection)
            if raw is not None:
                _close_socket(raw, someone_waits=someone_waits)
            finishing = _forget_now(connection)
        except Exception as error:
            log.debug("closing a monitor connection: %r", error)
            return
        if finishing is not None:
            finishing.add_done_callback(_retrieve)

    async def probe(self, connection: AsyncConnection, query: str) -> Sequence[Any]:
        """Run ``query`` (``exec_driver_sql``: no SQLAlchemy compilation) and return its first
        row as a tuple.

        The query runs in a child task: a cancelled probe closes the connection's socket (so the
        child ends within a loop iteration) instead of letting SQLAlchemy and the library wait on
        a hung server to clean up; the core then closes the monitor connection.
        """
        task = asyncio.ensure_future(self._fetch_row(connection, query))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.done():
                raw = _driver_connection(connection)
                if raw is not None:
                    _close_socket(raw, someone_waits=True)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({task}, timeout=TASK_END_TIMEOUT)
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: it is the cancelled probe's, not news
            else:
                task.add_done_callback(_retrieve)
            raise

    @staticmethod
    async def _fetch_row(connection: AsyncConnection, query: str) -> tuple[Any, ...]:
        result = await connection.exec_driver_sql(query)
        row = result.first()
        if row is None:
            raise sa_exc.InvalidRequestError("the probe query returned no row")
        return tuple(row)

    async def close_monitor(self, connection: AsyncConnection) -> None:
        """Close the monitor connection's socket, then let SQLAlchemy forget it; never waits on
        the server."""
        self._close_now(connection, someone_waits=False)


def _with_monitor_name(
    url: URL, kwargs: dict[str, Any], dialect: str
) -> tuple[URL, dict[str, Any]]:
    """Name the monitor's sessions :data:`MONITOR_APPLICATION_NAME` unless something names them."""
    if dialect == "asyncpg":
        args = dict(kwargs.get("connect_args") or {})
        settings = dict(args.get("server_settings") or {})
        settings.setdefault("application_name", MONITOR_APPLICATION_NAME)
        args["server_settings"] = settings
        kwargs["connect_args"] = args
        return url, kwargs
    connect_args = kwargs.get("connect_args") or {}
    if "application_name" not in url.query and "application_name" not in connect_args:
        url = url.update_query_dict({"application_name": MONITOR_APPLICATION_NAME})
    return url, kwargs


class SqlalchemyDriver(AsyncSqlalchemyDriver):
    """The same driver under the name ``sqlalchemy``."""

    name: ClassVar[str] = "sqlalchemy"
