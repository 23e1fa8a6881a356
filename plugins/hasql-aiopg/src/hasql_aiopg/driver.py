"""The ``aiopg`` and ``aiopg_sa`` drivers of hasql-core, on top of aiopg 1.4 (psycopg2).

``aiopg`` keeps one :class:`aiopg.Pool` per host and hands out aiopg's own
:class:`aiopg.Connection` objects; ``aiopg_sa`` keeps one :class:`aiopg.sa.Engine` per host and hands
out :class:`aiopg.sa.SAConnection` objects. Those pool and engine objects are what the manager's
pool accessors (``get_master_pools()``, ``pools``, ...) return, as with hasql. The monitor uses a
dedicated :func:`aiopg.connect` connection per host, outside every pool.

aiopg behaviour the drivers work around (each one reproduced against a real server in the tests):

- A pool wakes a waiting ``acquire()`` only when an *open* connection comes back: when a closed one is
  released (its statement was cancelled or timed out, which makes aiopg close it, or it was
  discarded) a waiter sleeps on although a slot is free. And a waiter that is cancelled just after
  being woken swallows the wake-up, leaving the next waiter asleep while a connection sits idle. The
  drivers therefore queue acquires in front of the pool, on their own count of its slots
  (:class:`_Slots`), and only let an acquire into the pool when the pool can serve it without waiting
  for a release.
- ``Pool.terminate()`` closes handed-out connections even when they are closed already, and closing an
  aiopg connection twice unregisters its file descriptor from the event loop a second time (a number
  the kernel may meanwhile have given to another connection). The drivers close each connection at
  most once and do the terminating themselves.
- ``Pool.clear()`` and ``Pool.wait_closed()`` take the pool's lock, which an acquire holds while it
  connects (for up to the pool's ``timeout``, 60 s by default, when the host is frozen). The drivers
  close idle connections without that lock (:func:`_close_idle`).
- ``aiopg.create_pool()`` connects its ``minsize`` connections before it returns the pool, so a
  cancelled or failed creation leaves connections open until the garbage collector finds them. The
  drivers build the pool from the same arguments (the factory's own signature and defaults) without
  connecting, then fill it: a failed or cancelled open leaves a pool they can close.
- A connection whose ``on_connect`` callback raises or is cancelled is dropped by aiopg without being
  closed; the drivers close it.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib
import importlib.metadata
import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import aiopg
import attrs
import psycopg2
import psycopg2.extensions

from hasql_core.driver import Driver, ErrorFacts, PoolStats
from hasql_core.dsn import Dsn
from hasql_core.errors import ConfigurationError, PluginError

__all__ = [
    "MONITOR_APPLICATION_NAME",
    "UNLIMITED",
    "AiopgDriver",
    "AiopgSaAliasDriver",
    "AiopgSaDriver",
    "aiopg_error_facts",
    "conninfo",
    "import_aiopg_sa",
]

#: Application name of monitor connections, unless the DSN names one.
MONITOR_APPLICATION_NAME = "hasql-monitor"

#: The ``max`` reported in :class:`~hasql_core.driver.PoolStats` for a pool made with ``maxsize=0``,
#: which aiopg reads as "no limit".
UNLIMITED = 2**31 - 1

#: libpq parameters that choose among several hosts: the core picks the host, so every per-host pool
#: must connect to whatever role its host has (``target_session_attrs=read-write`` would keep a
#: standby's pool from ever connecting).
_HOST_SELECTION_PARAMS = frozenset({"target_session_attrs", "load_balance_hosts"})

_NO_FACTS = ErrorFacts()
_IDLE = psycopg2.extensions.TRANSACTION_STATUS_IDLE

PoolT = TypeVar("PoolT")
ConnT = TypeVar("ConnT")


def conninfo(dsn: Dsn, overrides: Mapping[str, str] | None = None, *, redact: bool = False) -> str:
    """The libpq connection string for the single host of ``dsn`` (psycopg2 takes libpq's).

    ``target_session_attrs`` and ``load_balance_hosts`` are left out; ``overrides`` are added as
    further parameters (a parameter the DSN already has is replaced). With ``redact=True`` the
    password and other secrets read ``***``.
    """
    extra = dict(overrides or {})
    params = [
        (key, value)
        for key, value in dsn.params
        if key not in _HOST_SELECTION_PARAMS and key not in extra
    ]
    params.extend(extra.items())
    return attrs.evolve(dsn, params=params).to_conninfo(redact=redact)


def _facts_of_one(error: BaseException) -> ErrorFacts:
    # asyncio.TimeoutError is TimeoutError (an OSError) on >= 3.11, a class of its own on 3.10. aiopg
    # raises it for a statement's own ``timeout=``: the statement's fault, not the host's.
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return _NO_FACTS
    if isinstance(error, psycopg2.Error):
        sqlstate: str | None = getattr(error, "pgcode", None) or None
        if isinstance(error, psycopg2.InterfaceError):
            # psycopg2 raises it for any use of a closed connection ("connection already closed")
            # or of a cursor whose connection is closed ("cursor already closed").
            return ErrorFacts(sqlstate=sqlstate, connection_lost=True)
        if isinstance(error, psycopg2.OperationalError) and sqlstate is None:
            # No SQLSTATE: libpq's own report that the connection broke or could not be made
            # ("server closed the connection unexpectedly", "could not connect", aiopg's
            # "Connection closed" for a statement whose connection was closed under it).
            return ErrorFacts(connection_lost=True)
        return ErrorFacts(sqlstate=sqlstate)
    if isinstance(error, OSError):
        return ErrorFacts(connection_lost=True)
    return _NO_FACTS


def aiopg_error_facts(error: BaseException) -> ErrorFacts:
    """The facts of an exception raised by aiopg, psycopg2 or the network under them.

    - a ``psycopg2.Error`` gives its ``pgcode`` as the SQLSTATE (25006 for a write on a standby,
      57P01 when the server ends the session while a result is read, ...);
    - ``psycopg2.InterfaceError`` (any use of a closed connection or of its cursors) and a
      ``psycopg2.OperationalError`` without a SQLSTATE (libpq's "server closed the connection
      unexpectedly", a failed connect, aiopg's "Connection closed") are lost connections; an
      ``OperationalError`` that carries a SQLSTATE (a lock timeout, too many connections) is not;
    - an ``OSError`` is a lost connection, except a timeout: aiopg raises ``asyncio.TimeoutError``
      for a statement's own ``timeout=`` (it closes the connection, but the host is not to blame);
    - aiopg turns the server's ``statement_timeout`` (psycopg2's ``QueryCanceledError``, 57014)
      into ``asyncio.CancelledError``; such a cancellation gives the facts of the error it was
      raised from (SQLSTATE 57014, not a lost connection);
    - anything else carries no facts. The explicit ``__cause__`` chain is followed to the first
      exception that carries any. Never raises.
    """
    current: BaseException | None = error
    for _ in range(8):
        if current is None:
            break
        try:
            facts = _facts_of_one(current)
        except Exception:  # an exception object whose attributes fail: it tells nothing
            facts = _NO_FACTS
        if facts != _NO_FACTS:
            return facts
        if isinstance(current, asyncio.CancelledError) and isinstance(
            current.__context__, psycopg2.Error
        ):
            # aiopg raises CancelledError while handling psycopg2's QueryCanceledError (57014,
            # the server's statement_timeout): the facts are those of the server's error.
            current = current.__context__
        else:
            current = current.__cause__
    return _NO_FACTS


def _close(connection: aiopg.Connection) -> None:
    """Close an aiopg connection on the client side, once: sends nothing it must wait for.

    aiopg's ``close()`` unregisters the file descriptor from the event loop every time it is called,
    so a second call could unregister a descriptor number that now belongs to another connection.
    """
    if not connection.closed:
        connection.close()


def _close_idle(pool: aiopg.Pool) -> int:
    """Close every idle connection of ``pool`` now and return how many there were.

    aiopg keeps idle connections in ``Pool._free``. Its public ways to close them (``clear()``,
    ``wait_closed()``) first take the pool's lock, which an acquire holds while it connects, for up
    to the pool's ``timeout`` when the host is frozen; this takes them out directly, without waiting.
    """
    idle: collections.deque[aiopg.Connection] = pool._free
    count = 0
    while idle:
        _close(idle.popleft())
        count += 1
    return count


def _give_back(pool: aiopg.Pool, raw: aiopg.Connection) -> asyncio.Future[None] | None:
    """``pool.release(raw)``, tolerating a connection the pool no longer counts as handed out.

    Returns aiopg's wake-up future when it is still pending (aiopg wakes a waiting acquire under the
    pool's lock); None otherwise.
    """
    try:
        future = pool.release(raw)
    except (AssertionError, KeyError):  # not (or no longer) in the pool's set of used connections
        return None
    return None if future.done() else future


class _Slots:
    """A first-come first-served count of a pool's free slots, safe against cancellation.

    :meth:`take` waits while every slot is taken; :meth:`give` hands a slot straight to the longest
    waiting taker. A taker cancelled after it was handed a slot passes it on, so no slot and no
    wake-up is ever lost (asyncio's ``Condition``, which aiopg waits on, loses them).
    """

    __slots__ = ("free", "waiters")

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def take(self) -> None:
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give()  # it was ours already: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


class _PoolState:
    """What a driver keeps per pool: handed-out connections, acquires inside aiopg, closing flags."""

    __slots__ = (
        "background",
        "closing",
        "expired",
        "handed_out",
        "in_flight",
        "name",
        "pool",
        "quiet",
        "slots",
        "terminated",
    )

    def __init__(self, pool: aiopg.Pool, name: str) -> None:
        self.pool = pool
        self.name = name
        maxsize = pool.maxsize
        self.slots = _Slots(maxsize) if maxsize else None
        #: id(handed-out object) -> (that object, its aiopg connection)
        self.handed_out: dict[int, tuple[Any, aiopg.Connection]] = {}
        #: ids of handed-out connections to close instead of pooling when they come back
        self.expired: set[int] = set()
        self.in_flight = 0
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.closing = False
        self.terminated = False
        self.background: set[asyncio.Future[None]] = set()

    def update_quiet(self) -> None:
        if self.handed_out or self.in_flight:
            self.quiet.clear()
        else:
            self.quiet.set()

    def free_slot(self) -> None:
        if self.slots is not None:
            self.slots.give()

    def keep(self, future: asyncio.Future[None] | None) -> None:
        """Keep a reference to aiopg's wake-up future until it is done."""
        if future is not None:
            self.background.add(future)
            future.add_done_callback(self.background.discard)


def _bind(factory: Callable[..., Any], dsn: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments ``factory(dsn, **options)`` would run with, its defaults filled in.

    Raises ``TypeError`` as the call would (an argument given twice, a missing one).
    """
    bound = inspect.signature(factory).bind(dsn, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    extra = arguments.pop("kwargs", {})
    arguments.update(extra)
    return arguments


def _make_aiopg_pool(dsn: str, options: Mapping[str, Any]) -> aiopg.Pool:
    """An :class:`aiopg.Pool` exactly as ``aiopg.create_pool(dsn, **options)`` makes it, unfilled.

    ``create_pool`` passes its arguments on to the ``Pool`` constructor and then connects
    ``minsize`` connections; here the same arguments, defaults included (read from
    ``create_pool``'s own signature), go to the constructor, and :meth:`_AiopgBase.open_pool` fills.
    """
    arguments = _bind(aiopg.create_pool, dsn, options)
    _check_connection_parameters(dsn, arguments)
    if arguments.get("on_connect") is not None:
        arguments["on_connect"] = _closing_on_failure(arguments["on_connect"])
    positional = [arguments.pop(name) for name in ("dsn", "minsize", "maxsize", "timeout")]
    return aiopg.Pool(*positional, **arguments)


def _closing_on_failure(
    on_connect: Callable[[aiopg.Connection], Awaitable[None]],
) -> Callable[[aiopg.Connection], Awaitable[None]]:
    """The user's ``on_connect``, called as given; if it raises or is cancelled the new connection
    is closed. aiopg itself drops such a connection without closing it: it stays open until the
    garbage collector finds it (the exception's traceback keeps it alive meanwhile)."""

    async def on_connect_or_close(connection: aiopg.Connection) -> None:
        try:
            await on_connect(connection)
        except BaseException:
            _close(connection)
            raise

    return on_connect_or_close


#: ``create_pool`` arguments that are neither its own nor libpq connection parameters: psycopg2's
#: ``connect()`` takes them, aiopg sets or drops them.
_NOT_CONNINFO = frozenset({"connection_factory", "cursor_factory", "async", "async_", "loop"})


def _check_connection_parameters(dsn: str, arguments: Mapping[str, Any]) -> None:
    """Refuse, before any connect, keyword arguments that psycopg2 would turn into libpq
    parameters libpq does not know (every connect would fail with "invalid connection option")."""
    own = set(inspect.signature(aiopg.create_pool).parameters)
    extra = {
        key: value
        for key, value in arguments.items()
        if key not in own and key not in _NOT_CONNINFO and value is not None
    }
    if not extra:
        return
    try:
        psycopg2.extensions.make_dsn(dsn, **extra)
    except psycopg2.ProgrammingError as error:
        raise ConfigurationError(
            f"pool_factory_kwargs {sorted(extra)}: aiopg passes the arguments it does not know to "
            f"psycopg2 as libpq connection parameters, and libpq refuses them ({error}). aiopg's "
            "pool options are minsize, maxsize, timeout, pool_recycle, on_connect, echo, "
            "enable_json, enable_hstore and enable_uuid."
        ) from None


class _AiopgBase(Driver[PoolT, ConnT, aiopg.Connection], Generic[PoolT, ConnT]):
    """What the ``aiopg`` and ``aiopg_sa`` drivers share; they differ in the pool object (a pool or
    an engine over one) and in the connection object handed out."""

    def __init__(self) -> None:
        self._states: dict[int, _PoolState] = {}

    # -- what the two drivers do differently --------------------------------------------------------

    def _build(self, dsn: Dsn, options: Mapping[str, Any]) -> tuple[PoolT, aiopg.Pool]:
        """Make the pool object handed to the core, and the aiopg pool it is or wraps."""
        raise NotImplementedError

    async def _take(self, pool: PoolT) -> ConnT:
        raise NotImplementedError

    def _raw(self, connection: ConnT) -> aiopg.Connection | None:
        """The aiopg connection under ``connection`` (None: already given back by the user)."""
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------------

    def _state(self, pool: PoolT) -> _PoolState:
        state = self._states.get(id(pool))
        if state is None:
            raise RuntimeError(
                f"this {self.name} pool is closed or terminated (or was not made by this driver)"
            )
        return state

    def _forget(self, pool: PoolT) -> None:
        self._states.pop(id(pool), None)

    def _settle(self, pool: PoolT, state: _PoolState) -> None:
        """After an acquire ended: update the quiet flag; forget a terminated pool once no acquire
        is left inside it."""
        state.update_quiet()
        if state.terminated and not state.in_flight:
            self._forget(pool)

    # -- pools -------------------------------------------------------------------------------------

    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> PoolT:
        """Build the host's pool from ``pool_options`` (the user's ``pool_factory_kwargs``), without
        connecting; must run inside the event loop (aiopg's pool binds to the running loop).

        ``pool_options`` is never modified. ``dsn`` comes from the DSN and cannot be given there
        (:class:`~hasql_core.errors.ConfigurationError`); an argument the factory does not take
        raises ``TypeError``, a bad size ``ValueError``, as the factory would.
        """
        if "dsn" in pool_options:
            raise ConfigurationError(
                f"pool option 'dsn' cannot be set for the {self.name} driver: each host's "
                "connection string comes from the PoolManager's DSN. Remove it from "
                "pool_factory_kwargs."
            )
        made, aiopg_pool = self._build(dsn, pool_options)
        self._states[id(made)] = _PoolState(aiopg_pool, str(dsn.hosts[0]))
        return made

    async def open_pool(self, pool: PoolT) -> None:
        """Connect the pool's ``minsize`` connections (as ``aiopg.create_pool`` does before it
        returns). On failure or cancellation the connections made so far stay in the pool, closed by
        :meth:`terminate_pool`, which the core calls then."""
        state = self._state(pool)
        if state.pool.minsize <= 0:
            return
        # One acquire fills the pool up to minsize first, then hands out one of those connections.
        connection = await self.acquire(pool, None)
        await self.release(pool, connection)

    async def acquire(self, pool: PoolT, timeout: float | None, **kwargs: Any) -> ConnT:
        """Take a connection from ``pool``; the caller must :meth:`release` or :meth:`discard` it.

        aiopg's ``acquire()`` takes no arguments and no timeout: ``timeout`` is ignored (the core
        cancels the call at its deadline; the pool's own ``timeout`` option still bounds a connect)
        and any ``kwargs`` raise ``TypeError``. Acquires wait for a free slot in this driver's own
        queue, first come first served, and enter aiopg's pool only when it can serve them without
        waiting for a release (see the module's notes). Raises ``RuntimeError`` once
        :meth:`close_pool` or :meth:`terminate_pool` began, and whatever connecting raises
        (``psycopg2.OperationalError``, ``asyncio.TimeoutError`` after the pool's ``timeout``).

        Cancellation-safe: a cancelled acquire gives its slot back, and aiopg closes a connection
        whose connect was cancelled; once aiopg hands a connection over, nothing is awaited before it
        is recorded as handed out and returned.
        """
        if kwargs:
            raise TypeError(
                f"the {self.name} driver's acquire takes no extra arguments (aiopg's "
                f"Pool.acquire() has none), got {sorted(kwargs)}"
            )
        state = self._state(pool)
        if state.closing:
            raise RuntimeError(f"the {self.name} pool of {state.name} is closing")
        if state.slots is not None:
            await state.slots.take()
        state.in_flight += 1
        state.quiet.clear()
        try:
            connection = await self._take(pool)
        except BaseException:
            state.in_flight -= 1
            state.free_slot()
            self._settle(pool, state)
            raise
        state.in_flight -= 1
        raw = self._raw(connection)
        if state.terminated or raw is None:  # terminated while this acquire was connecting
            if raw is not None:
                _close(raw)
                _give_back(state.pool, raw)
            _close_idle(state.pool)
            state.free_slot()
            self._settle(pool, state)
            raise RuntimeError(f"the {self.name} pool of {state.name} was terminated")
        state.handed_out[id(connection)] = (connection, raw)
        return connection

    async def release(self, pool: PoolT, connection: ConnT, **kwargs: Any) -> None:
        """Give ``connection`` back to ``pool`` (aiopg's ``Pool.release``); never waits on the server.

        aiopg sends nothing to the server here: an open connection goes back to the pool as it is, a
        closed one is dropped, and one left inside a transaction is closed (as aiopg would, but
        without its ``ResourceWarning``, which a test suite run with warnings as errors would turn
        into an exception after the pool had already let go of the connection), so this completes
        without suspending. A connection handed out before
        :meth:`expire_idle` is closed instead. aiopg's ``release()`` takes no arguments: ``kwargs``
        raise ``TypeError`` (before anything is done, so the connection can still be discarded).
        A connection already released or discarded is left alone. For ``aiopg_sa``, a
        ``SAConnection`` the user closed already went back to the pool then; only its slot is freed.
        """
        if kwargs:
            raise TypeError(
                f"the {self.name} driver's release takes no extra arguments (aiopg's "
                f"Pool.release() has none), got {sorted(kwargs)}"
            )
        state = self._states.get(id(pool))
        if state is None:  # the pool was closed or terminated: nothing to give back to
            raw = self._raw(connection)
            if raw is not None:
                _close(raw)
            return
        item = state.handed_out.pop(id(connection), None)
        if item is None:
            # Not handed out by this driver (taken from the pool directly and registered with the
            # manager), or given back already.
            raw = self._raw(connection)
            if raw is not None:
                state.keep(_give_back(state.pool, raw))
            return
        try:
            raw = item[1]
            if id(connection) in state.expired:
                state.expired.discard(id(connection))
                _close(raw)
            elif not raw.closed and raw.raw.get_transaction_status() != _IDLE:
                _close(raw)  # what aiopg would do, without its ResourceWarning
            if self._raw(connection) is not None:
                state.keep(_give_back(state.pool, raw))
        finally:
            state.free_slot()
            state.update_quiet()

    def discard(self, pool: PoolT, connection: ConnT) -> None:
        """Close ``connection`` at once and free its slot; the pool opens a new connection for it
        on a later acquire.

        aiopg's ``close()`` unregisters the socket from the event loop and closes it (libpq puts a
        goodbye message in the socket buffer if it fits, without waiting), so this returns at once
        even when the server is frozen; a statement still waiting on the connection fails with
        ``psycopg2.OperationalError("Connection closed")``. A connection already released or
        discarded is left alone (it may be in use by someone else by now). Never raises.
        """
        state = self._states.get(id(pool))
        if state is None:
            raw = self._raw(connection)
            if raw is not None:
                _close(raw)
            return
        item = state.handed_out.pop(id(connection), None)
        if item is None:
            return
        raw = item[1]
        state.expired.discard(id(connection))
        try:
            _close(raw)
            _give_back(state.pool, raw)
        finally:
            state.free_slot()
            state.update_quiet()

    async def close_pool(self, pool: PoolT) -> None:
        """Close gracefully: new acquires fail at once (``RuntimeError``), connections released from
        now on are closed, and once every handed-out connection is back (no limit here: the core
        bounds this call) the idle ones are closed and the pool is marked closed.

        aiopg's own ``wait_closed()`` could wait forever for a connection that came back closed
        (the pool is only woken by open ones); this waits on the driver's own count instead.
        """
        state = self._state(pool)
        state.closing = True
        state.pool.close()
        await state.quiet.wait()
        _close_idle(state.pool)
        await state.pool.wait_closed()  # nothing left to wait for: it only marks the pool closed
        self._forget(pool)

    async def terminate_pool(self, pool: PoolT) -> None:
        """Close the pool and every one of its connections now, handed-out ones included.

        A statement running on a handed-out connection fails at once with
        ``psycopg2.OperationalError("Connection closed")``; releasing or discarding such a connection
        later does nothing more. An acquire still connecting when this runs fails with
        ``RuntimeError`` when its connect ends, and closes what it got. Never waits on a server.
        """
        state = self._states.get(id(pool))
        if state is None:
            return
        state.closing = state.terminated = True
        state.pool.close()
        for _, raw in list(state.handed_out.values()):
            _close(raw)
            _give_back(state.pool, raw)
        for _ in state.handed_out:
            state.free_slot()
        state.handed_out.clear()
        state.expired.clear()
        _close_idle(state.pool)
        for future in list(state.background):
            future.cancel()
        self._settle(pool, state)

    async def expire_idle(self, pool: PoolT) -> None:
        """Close the pool's idle connections now, and the handed-out ones when they come back.

        Called when the host stops being the primary, so no connection opened while it was writable
        is handed out again; the pool opens new connections on later acquires. Takes no lock and
        waits on nothing.
        """
        state = self._states.get(id(pool))
        if state is None or state.closing:
            return
        state.expired.update(state.handed_out)
        _close_idle(state.pool)

    def pool_stats(self, pool: PoolT) -> PoolStats:
        """The pool's size figures, without I/O.

        ``min``/``max`` are aiopg's ``minsize``/``maxsize`` (``maxsize=0``, no limit, reads as
        :data:`UNLIMITED`); ``size`` is aiopg's ``size`` (idle, handed out, and connecting);
        ``idle`` is aiopg's ``freesize`` (idle open connections only, so unopened capacity is not
        counted there but in :attr:`PoolStats.free`); ``in_use`` counts the connections this
        driver handed out and did not get back yet.
        """
        # aiopg's Pool and aiopg.sa's Engine both have these four properties.
        size: int = pool.size  # type: ignore[attr-defined]
        idle: int = pool.freesize  # type: ignore[attr-defined]
        state = self._states.get(id(pool))
        return PoolStats(
            min=pool.minsize,  # type: ignore[attr-defined]
            max=pool.maxsize or UNLIMITED,  # type: ignore[attr-defined]
            size=size,
            idle=idle,
            in_use=len(state.handed_out) if state is not None else max(size - idle, 0),
        )

    def free_size(self, pool: PoolT) -> int:
        """Acquires the pool can serve now: its free slots (``maxsize`` less the connections handed
        out and the acquires in progress), in O(1)."""
        state = self._states.get(id(pool))
        if state is None:
            return 0
        if state.slots is None:
            return UNLIMITED
        return state.slots.free

    # -- connections -------------------------------------------------------------------------------

    def error_facts(self, error: BaseException) -> ErrorFacts:
        """See :func:`aiopg_error_facts`."""
        return aiopg_error_facts(error)

    # -- the monitor connection --------------------------------------------------------------------

    async def connect_monitor(self, dsn: Dsn, timeout: float) -> aiopg.Connection:
        """Open a plain :func:`aiopg.connect` connection to the host, within ``timeout`` seconds.

        psycopg2's asynchronous connections (aiopg's) are always in autocommit mode, so a probe
        never leaves a transaction open. No type registration that costs a round trip (hstore) is
        done. ``application_name`` is :data:`MONITOR_APPLICATION_NAME` unless the DSN sets one. A
        connect that times out or is cancelled is closed by aiopg; the time limit raises
        ``asyncio.TimeoutError``.
        """
        overrides = {}
        if "application_name" not in dsn.options():
            overrides["application_name"] = MONITOR_APPLICATION_NAME
        connection: aiopg.Connection = await aiopg.connect(
            conninfo(dsn, overrides),
            timeout=timeout,
            enable_json=False,
            enable_hstore=False,
            enable_uuid=False,
        )
        return connection

    async def probe(self, connection: aiopg.Connection, query: str) -> Sequence[Any]:
        """Run ``query`` on the monitor connection and return its first row (``()`` for none).

        A cancelled probe returns at once even when the server is frozen: aiopg closes the
        connection on cancellation instead of asking the server to cancel the query.
        """
        cursor = await connection.cursor()
        try:
            await cursor.execute(query)
            row = await cursor.fetchone()
        finally:
            cursor.close()
        return () if row is None else tuple(row)

    async def close_monitor(self, connection: aiopg.Connection) -> None:
        """Close the monitor connection on the client side; never waits for the server."""
        _close(connection)


class AiopgDriver(_AiopgBase[aiopg.Pool, aiopg.Connection]):
    """The ``aiopg`` driver: one :class:`aiopg.Pool` per host, aiopg's :class:`aiopg.Connection`
    handed out.

    ``pool_factory_kwargs`` are the keyword arguments of :func:`aiopg.create_pool` (``minsize``,
    ``maxsize``, ``timeout``, ``pool_recycle``, ``on_connect``, ``enable_hstore``, ``echo``, and
    psycopg2 connection parameters), with its defaults; the pool is built from them as given.
    """

    name: ClassVar[str] = "aiopg"

    def _build(self, dsn: Dsn, options: Mapping[str, Any]) -> tuple[aiopg.Pool, aiopg.Pool]:
        pool = _make_aiopg_pool(conninfo(dsn), options)
        return pool, pool

    async def _take(self, pool: aiopg.Pool) -> aiopg.Connection:
        connection: aiopg.Connection = await pool.acquire()
        return connection

    def _raw(self, connection: aiopg.Connection) -> aiopg.Connection | None:
        return connection

    def is_connection_closed(self, connection: aiopg.Connection) -> bool:
        """True when the connection was closed, by the client or because it broke."""
        return bool(connection.closed)


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_aiopg_sa() -> Any:
    """Import :mod:`aiopg.sa`, or raise :class:`~hasql_core.errors.PluginError` saying what to do.

    aiopg.sa needs SQLAlchemy >= 1.3, < 1.5 (it does not import with SQLAlchemy 2).
    """
    try:
        return importlib.import_module("aiopg.sa")
    except ImportError as error:
        version = _distribution_version("sqlalchemy")
        if version is None:
            raise PluginError(
                "the aiopg_sa driver needs SQLAlchemy, which is not installed: "
                "pip install 'hasql-aiopg[sa]' (SQLAlchemy >= 1.3, < 1.5)"
            ) from error
        raise PluginError(
            f"aiopg.sa cannot be imported with SQLAlchemy {version} installed: it needs "
            f"SQLAlchemy >= 1.3, < 1.5 ({type(error).__name__}: {error}). Install it in this "
            "environment: pip install 'hasql-aiopg[sa]', or use the aiopg driver."
        ) from error


class AiopgSaDriver(_AiopgBase[Any, Any]):
    """The ``aiopg_sa`` driver: one :class:`aiopg.sa.Engine` per host, its
    :class:`aiopg.sa.SAConnection` objects handed out (they also run SQLAlchemy core statements).

    ``pool_factory_kwargs`` are the keyword arguments of :func:`aiopg.sa.create_engine`
    (``dialect`` and everything :func:`aiopg.create_pool` takes), with its defaults. The engine is
    the one ``create_engine`` would make: an ``Engine`` over an :class:`aiopg.Pool`; its ``dsn`` is
    the host's connection string with the password shown as ``***``. Unlike ``create_engine`` no
    connection is opened for a pool with ``minsize=0``.

    Making the driver imports :mod:`aiopg.sa`: without SQLAlchemy 1.3/1.4 it raises
    :class:`~hasql_core.errors.PluginError`.
    """

    name: ClassVar[str] = "aiopg_sa"

    def __init__(self) -> None:
        super().__init__()
        self._sa = import_aiopg_sa()

    def _build(self, dsn: Dsn, options: Mapping[str, Any]) -> tuple[Any, aiopg.Pool]:
        full = conninfo(dsn)
        arguments = _bind(self._sa.create_engine, full, options)
        arguments.pop("dsn")
        dialect = arguments.pop("dialect")
        pool = _make_aiopg_pool(full, arguments)
        engine = self._sa.Engine(dialect, pool, conninfo(dsn, redact=True))
        return engine, pool

    async def _take(self, pool: Any) -> Any:
        return await pool.acquire()

    def _raw(self, connection: Any) -> aiopg.Connection | None:
        raw: aiopg.Connection | None = connection.connection
        return raw

    def is_connection_closed(self, connection: Any) -> bool:
        """True when the ``SAConnection`` was closed (given back) or its connection is closed."""
        return bool(connection.closed)

    async def query_row(self, connection: Any, query: str) -> Sequence[Any]:
        """Run the core's ``query`` on the aiopg connection under the ``SAConnection``."""
        raw = self._raw(connection)
        if raw is None:
            raise psycopg2.InterfaceError("the SAConnection is closed")
        return await self.probe(raw, query)


class AiopgSaAliasDriver(AiopgSaDriver):
    """The ``aiopg_sa`` driver under the name ``aiopg.sa``."""

    name: ClassVar[str] = "aiopg.sa"
