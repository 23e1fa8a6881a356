"""The ``asyncpg`` and ``asyncpgsa`` drivers of hasql-core.

Both drivers hand out asyncpg pool connections (``asyncpg.pool.PoolConnectionProxy``).
``asyncpgsa`` makes its pools with :func:`asyncpgsa.create_pool`, whose connections also accept
SQLAlchemy core statements. asyncpg's public API is used, except on the acquire and release
paths (see :mod:`hasql_asyncpg._pool_steps`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.metadata
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import urlencode

import asyncpg
import asyncpg.exceptions
import asyncpg.pool

from hasql_core.driver import Driver, ErrorFacts, PoolStats
from hasql_core.dsn import CLIENT_ONLY_PARAMS, Dsn
from hasql_core.errors import DsnError, PluginError

from ._pool_steps import acquire_steps, release_steps

__all__ = [
    "AsyncpgDriver",
    "AsyncpgsaDriver",
    "asyncpg_error_facts",
    "connect_arguments",
    "import_asyncpgsa",
    "merge_options",
]

#: libpq parameters that asyncpg reads from a DSN URL's query string only: it has no keyword
#: argument for most of them (``sslrootcert``, ``sslcert``, ...), and reading them is subtle
#: (default root certificate locations, environment variables, CRLs), so they are handed to asyncpg
#: in a DSN that holds nothing else, and asyncpg's own libpq-compatible handling applies unchanged.
DSN_ONLY_PARAMETERS = frozenset(
    {
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "sslnegotiation",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "passfile",
        "service",
        "krbsrvname",
        "gsslib",
    }
)

#: libpq parameters that are neither server settings nor understood by asyncpg: sending them to
#: the server (where asyncpg puts every unknown DSN parameter) would make it refuse the connection
#: with "unrecognized configuration parameter". Built from hasql-core's table of libpq parameters
#: (its client-only ones), plus the startup parameters asyncpg has no use for (``replication``)
#: or that the driver translates (``fallback_application_name``), and the aliases ``requiressl`` and
#: ``servicefile``. ``target_session_attrs`` is dropped on purpose: hasql-core routes by role
#: itself, and every per-host pool must be able to connect to a standby. ``connect_timeout`` and
#: ``fallback_application_name`` are translated (see :func:`connect_arguments`).
CLIENT_ONLY_PARAMETERS = (
    (CLIENT_ONLY_PARAMS | {"fallback_application_name", "replication", "requiressl", "servicefile"})
    - DSN_ONLY_PARAMETERS
    - {"host", "port", "user", "password", "dbname"}
)


def connect_arguments(dsn: Dsn) -> dict[str, Any]:
    """Translate a single-host :class:`~hasql_core.dsn.Dsn` into ``asyncpg.connect`` arguments.

    Why explicit keyword arguments rather than ``dsn=dsn.to_url()``: asyncpg passes every URL query
    parameter it does not know to the server as a setting, so libpq client parameters such as
    ``connect_timeout`` or ``keepalives`` would make the server refuse the connection, and
    ``target_session_attrs=read-write`` would make a standby's pool unable to connect. So:

    - host, port, user, password and database become the keyword arguments of those names (a host
      starting with ``/`` is a Unix socket directory; asyncpg appends ``.s.PGSQL.<port>`` itself).
      A ``hostaddr`` replaces the host as the address connected to, as in libpq (asyncpg has no
      separate name for SSL verification, so ``sslmode=verify-full`` then checks the address).
      Abstract Unix sockets (``@name``) raise :class:`~hasql_core.errors.DsnError`: asyncpg
      cannot connect to them;
    - the SSL and authentication-file parameters (:data:`DSN_ONLY_PARAMETERS`: ``sslmode``,
      ``sslrootcert``, ...) go to asyncpg in a ``dsn`` that holds only them, so asyncpg's own
      libpq-compatible SSL setup applies; keyword arguments take precedence over it in asyncpg;
    - ``connect_timeout`` becomes ``timeout`` (seconds), ``fallback_application_name`` becomes the
      ``application_name`` setting when none is given; the other client-only libpq parameters
      (:data:`CLIENT_ONLY_PARAMETERS`) are dropped;
    - everything else (``application_name``, ``options``, ``search_path``, ...) is a server setting
      and goes into ``server_settings``, sent in the startup packet as libpq does.

    User, password and database are left out when the DSN has none, so asyncpg's defaults
    (``PGUSER``, ``PGPASSWORD``, ``~/.pgpass``, the user's name as database) apply.
    """
    options = dict(dsn.options())
    host = options.pop("hostaddr", None) or dsn.host
    if host.startswith("@"):
        raise DsnError(
            f"asyncpg cannot connect to the abstract Unix socket {host!r}; give the socket "
            "directory (a path starting with '/') or a TCP host"
        )
    args: dict[str, Any] = {"host": host, "port": dsn.port}
    if dsn.user is not None:
        args["user"] = dsn.user
    if dsn.password is not None:
        args["password"] = dsn.password
    if dsn.database is not None:
        args["database"] = dsn.database

    dsn_only = {key: options.pop(key) for key in sorted(DSN_ONLY_PARAMETERS & options.keys())}
    if dsn_only:
        args["dsn"] = "postgresql://?" + urlencode(dsn_only)
    connect_timeout = options.get("connect_timeout")
    if connect_timeout is not None:
        try:
            seconds = float(connect_timeout)
        except ValueError:
            raise DsnError(
                f"connect_timeout must be a number of seconds, got {connect_timeout!r}"
            ) from None
        if seconds > 0:  # libpq: zero or negative means wait forever
            args["timeout"] = seconds
    fallback_name = options.get("fallback_application_name")
    settings = {key: value for key, value in options.items() if key not in CLIENT_ONLY_PARAMETERS}
    if fallback_name and "application_name" not in settings:
        settings["application_name"] = fallback_name
    if settings:
        args["server_settings"] = settings
    return args


def merge_options(derived: Mapping[str, Any], user: Mapping[str, Any]) -> dict[str, Any]:
    """Combine arguments derived from the DSN with the user's options; the user's win.

    ``server_settings`` is merged key by key (the user's values override the DSN's), the way
    asyncpg itself merges a DSN's settings with its ``server_settings`` argument. Neither mapping
    is modified.
    """
    merged = {**derived, **user}
    if user.get("server_settings") is not None or "server_settings" in derived:
        # Always a new dict, so nothing downstream can reach the user's own.
        merged["server_settings"] = {
            **derived.get("server_settings", {}),
            **(user.get("server_settings") or {}),
        }
    return merged


def asyncpg_error_facts(error: BaseException) -> ErrorFacts:
    """The facts of an exception raised by asyncpg (or by the network under it).

    - a server error (``asyncpg.PostgresError``) gives its ``sqlstate``; asyncpg's
      ``ConnectionDoesNotExistError`` (the server ended the session) is also a lost connection;
    - ``asyncpg.InterfaceError("connection is closed ...")`` (an operation on a connection whose
      socket is gone), ``InterfaceError("... connection has been released back to the pool")`` (asyncpg
      took back a handed-out connection the server closed) and ``OSError`` (refused, reset,
      unreachable, name resolution) are lost connections; other interface errors ("pool is
      closing", "another operation is in progress") are misuse, not the host's fault;
    - ``asyncpg.InternalClientError`` (the protocol lost track of the connection's state, as after
      a FATAL message that arrived while it was idle) is a lost connection;
    - a timeout is not a lost connection: asyncpg raises it for a query's own ``timeout=``, after
      which the connection is fine (on Python >= 3.11 ``TimeoutError`` is an ``OSError``, so it is
      checked first).
    """
    # asyncio.TimeoutError is TimeoutError (an OSError) on >= 3.11, a class of its own on 3.10.
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return ErrorFacts()
    if isinstance(error, asyncpg.exceptions.PostgresError):
        sqlstate = getattr(error, "sqlstate", None) or None
        lost = isinstance(error, asyncpg.exceptions.ConnectionDoesNotExistError)
        return ErrorFacts(sqlstate=sqlstate, connection_lost=lost)
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        # asyncpg's protocol lost track of the connection's state, as after a FATAL message that
        # arrived while it was idle (the postmaster died): the connection cannot be used again.
        return ErrorFacts(connection_lost=True)
    if isinstance(error, asyncpg.exceptions.InterfaceError):
        message = str(error)
        # "connection has been released back to the pool": asyncpg detaches a pooled connection
        # that the server closed while it was idle in the user's hands (shutdown, terminated
        # backend). The core only classifies errors of connections it still has handed out, so
        # there it means the connection was lost, not that the user reused a released one.
        lost = message.startswith("connection is closed") or "released back to the pool" in message
        return ErrorFacts(connection_lost=lost)
    return ErrorFacts(connection_lost=isinstance(error, OSError))


class AsyncpgDriver(Driver[asyncpg.Pool, asyncpg.pool.PoolConnectionProxy, asyncpg.Connection]):
    """The ``asyncpg`` driver: one :class:`asyncpg.Pool` per host.

    ``pool_factory_kwargs`` are keyword arguments of :func:`asyncpg.create_pool` (``min_size``,
    ``max_size``, ``statement_cache_size``, ``server_settings``, ``init``, ``setup``, ``reset``,
    ``connection_class``, ...). They are passed as given, on top of the connection arguments derived
    from the DSN (see :func:`connect_arguments`); where both set a value the user's wins, and
    ``server_settings`` are merged key by key. Connections handed out are asyncpg's
    ``PoolConnectionProxy`` objects. Monitor connections are plain :class:`asyncpg.Connection`.
    """

    name: ClassVar[str] = "asyncpg"
    #: The release coroutine waits only on protocol futures (the reset query), or on the task
    #: of ``Pool.release()``'s shield: it can be resumed from their callbacks.
    release_in_background: ClassVar[bool] = True
    release_needs_task: ClassVar[bool] = False

    def __init__(self) -> None:
        # Pools whose open_pool() is running, and pools closed or terminated before their open
        # finished: such a pool is terminated as soon as its open ends and is never opened again.
        # Keyed by id(); the values keep the pools alive, so an id is never reused meanwhile.
        self._opening: dict[int, asyncpg.Pool] = {}
        self._doomed: dict[int, asyncpg.Pool] = {}

    # -- pools -------------------------------------------------------------------------------------

    def _pool_factory(self) -> Callable[..., Any]:
        """The function that makes a pool from keyword arguments (``asyncpg.create_pool``)."""
        return asyncpg.create_pool  # type: ignore[no-any-return]

    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> asyncpg.Pool:
        """Return an unopened asyncpg pool for the host of ``dsn``; does no I/O.

        ``pool_options`` is not modified: the arguments are built in a new dict.
        """
        options = merge_options(connect_arguments(dsn), pool_options)
        return self._pool_factory()(**options)

    async def open_pool(self, pool: asyncpg.Pool) -> None:
        """Open the pool: connect its ``min_size`` connections (``await pool``).

        On failure or cancellation asyncpg closes the connections it opened. A pool closed or
        terminated while this runs is terminated when the opening ends, and this raises
        ``asyncpg.InterfaceError("pool is closed")``.
        """
        key = id(pool)
        if key in self._doomed:
            raise asyncpg.exceptions.InterfaceError("pool is closed")
        self._opening[key] = pool
        try:
            await pool
        finally:
            del self._opening[key]
        if key in self._doomed:
            pool.terminate()
            raise asyncpg.exceptions.InterfaceError("pool is closed")

    def _doom_unopened(self, pool: asyncpg.Pool) -> bool:
        """Mark a pool still opening so it is terminated once open; True when it was opening."""
        if id(pool) in self._opening:
            self._doomed[id(pool)] = pool
            return True
        return False

    def acquire(  # returns asyncpg's coroutine: one frame less
        self, pool: asyncpg.Pool, timeout: float | None, **kwargs: Any
    ) -> Coroutine[Any, Any, asyncpg.pool.PoolConnectionProxy]:
        """Take a connection from ``pool``, as ``await pool.acquire(**kwargs)`` does; returns
        asyncpg's own acquire coroutine (see :mod:`hasql_asyncpg._pool_steps`).

        ``timeout`` is deliberately not passed to asyncpg: ``Pool.acquire(timeout=...)`` wraps the
        acquire in ``asyncio.wait_for``, which costs 13-15 % of throughput under load, and the core
        already cancels this call at its deadline. (A ``timeout`` in the user's ``kwargs`` is passed
        on.) Cancellation-safe: asyncpg puts the connection holder back in the pool when the acquire
        is cancelled at any await, and once the connection is handed to us the coroutine returns
        without awaiting again.
        """
        return acquire_steps(pool, kwargs)

    def release(
        self, pool: asyncpg.Pool, connection: asyncpg.pool.PoolConnectionProxy, **kwargs: Any
    ) -> Coroutine[Any, Any, None]:
        """Give ``connection`` back, as ``pool.release(connection, **kwargs)`` does, without
        asyncpg's shield around the reset (see :mod:`hasql_asyncpg._pool_steps`): returns the
        coroutine that runs it.

        asyncpg resets the connection (``RESET ALL``, ``UNLISTEN *``, advisory locks, ...) unless
        the pool was made with ``reset=``. Cancelling the coroutine (the core does at its
        ``release_timeout``, or when its caller is cancelled) stops the reset: asyncpg then closes
        the connection and frees its slot, and the core discards it. Releasing a connection twice
        does nothing.
        """
        return release_steps(pool, connection, kwargs)

    def discard(self, pool: asyncpg.Pool, connection: asyncpg.pool.PoolConnectionProxy) -> None:
        """Close ``connection`` at once (``terminate()``: the socket is closed, nothing is sent or
        awaited) and free its slot: asyncpg puts the holder back in the pool when a pooled
        connection is terminated, and opens a new connection for it on a later acquire.

        A release of the same connection still in flight (waiting on a frozen server to finish a
        cancellation or the reset) then fails inside asyncpg's shielded release, which terminates
        and frees the holder itself; the connection is never handed out again. A connection
        already released or discarded is left alone.
        """
        with contextlib.suppress(asyncpg.exceptions.InterfaceError):  # already released
            connection.terminate()

    async def close_pool(self, pool: asyncpg.Pool) -> None:
        """Close gracefully: ``pool.close()`` waits for handed-out connections, then closes all.

        asyncpg terminates the pool when this fails or is cancelled. A pool that was never opened
        holds no connection and is just marked closed.
        """
        if self._doom_unopened(pool):
            return
        try:
            await pool.close()
        except asyncpg.exceptions.InterfaceError:
            self._doomed[id(pool)] = pool  # never opened: nothing to close, never open it later

    async def terminate_pool(self, pool: asyncpg.Pool) -> None:
        """Close the pool and all its connections at once, handed-out ones too (``terminate()``)."""
        if self._doom_unopened(pool):
            return
        try:
            pool.terminate()
        except asyncpg.exceptions.InterfaceError:
            self._doomed[id(pool)] = pool  # never opened: nothing to close, never open it later

    async def expire_idle(self, pool: asyncpg.Pool) -> None:
        """``pool.expire_connections()``: every connection open now is closed and replaced by a new
        one the next time it would be handed out (handed-out ones are closed when released)."""
        await pool.expire_connections()

    def pool_stats(self, pool: asyncpg.Pool) -> PoolStats:
        """Sizes from asyncpg's public getters; ``in_use`` is ``size - idle``.

        asyncpg's ``get_size()`` counts open connections and ``get_idle_size()`` the open ones not
        handed out, which is the meaning :class:`~hasql_core.driver.PoolStats` asks for.
        """
        size = int(pool.get_size())
        idle = int(pool.get_idle_size())
        return PoolStats(
            min=int(pool.get_min_size()),
            max=int(pool.get_max_size()),
            size=size,
            idle=idle,
            in_use=max(size - idle, 0),
        )

    # -- connections -------------------------------------------------------------------------------

    def is_connection_closed(self, connection: asyncpg.pool.PoolConnectionProxy) -> bool:
        """True when the connection's socket is closed, or when it was already released."""
        try:
            return bool(connection.is_closed())
        except asyncpg.exceptions.InterfaceError:  # "connection has been released back to the pool"
            return True

    def error_facts(self, error: BaseException) -> ErrorFacts:
        """See :func:`asyncpg_error_facts`."""
        return asyncpg_error_facts(error)

    # -- the monitor connection --------------------------------------------------------------------

    async def connect_monitor(self, dsn: Dsn, timeout: float) -> asyncpg.Connection:
        """Open a plain ``asyncpg.connect()`` connection bounded by ``timeout`` (which covers the
        TCP connect and the startup handshake).

        asyncpg connections run every statement in autocommit unless a transaction is started, so a
        probe never holds a snapshot. The statement cache stays on: after the first probe, each
        probe is a single round trip (bind and execute a prepared statement).
        """
        args = connect_arguments(dsn)
        args["timeout"] = timeout
        return await asyncpg.connect(**args)

    async def probe(self, connection: asyncpg.Connection, query: str) -> Sequence[Any]:
        """Run ``query`` with ``fetchrow``; return its values in column order (``()``: no row)."""
        row = await connection.fetchrow(query)
        return () if row is None else tuple(row.values())

    async def close_monitor(self, connection: asyncpg.Connection) -> None:
        """``connection.terminate()``: closes the socket at once, never waits on the server."""
        connection.terminate()


def _distribution_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def import_asyncpgsa() -> Any:
    """Import :mod:`asyncpgsa`, or raise :class:`~hasql_core.errors.PluginError` saying what to do.

    asyncpgsa only imports with SQLAlchemy 1.x (it uses the ``pypostgresql`` dialect, removed in
    SQLAlchemy 2.0), so an import failure names the installed SQLAlchemy version and the fix.
    """
    try:
        return importlib.import_module("asyncpgsa")
    except ImportError as error:
        missing = error.name if isinstance(error, ModuleNotFoundError) else None
        if missing == "asyncpgsa":
            raise PluginError(
                "the asyncpgsa driver needs the asyncpgsa package, which is not installed: "
                "pip install asyncpgsa (it needs SQLAlchemy 1.x: "
                "pip install 'sqlalchemy<2' asyncpgsa)"
            ) from error
        sqlalchemy_version = _distribution_version("sqlalchemy")
        if sqlalchemy_version is None or (missing or "").split(".")[0] == "sqlalchemy":
            raise PluginError(
                "the asyncpgsa driver needs SQLAlchemy 1.x, which is not installed: "
                "pip install 'sqlalchemy<2' asyncpgsa"
            ) from error
        if int(sqlalchemy_version.split(".")[0]) >= 2:
            raise PluginError(
                f"asyncpgsa cannot be imported with SQLAlchemy {sqlalchemy_version} installed: "
                "asyncpgsa works with SQLAlchemy 1.x only (it uses a dialect SQLAlchemy 2.0 "
                f"removed; {type(error).__name__}: {error}). Install SQLAlchemy 1.4 in this "
                "environment: pip install 'sqlalchemy<2' asyncpgsa, or use the asyncpg driver "
                "(or the sqlalchemy driver of hasql-sqlalchemy for SQLAlchemy 2)."
            ) from error
        asyncpgsa_version = _distribution_version("asyncpgsa") or "unknown version"
        raise PluginError(
            f"asyncpgsa {asyncpgsa_version} failed to import with SQLAlchemy "
            f"{sqlalchemy_version}: {type(error).__name__}: {error}. "
            "Reinstall it: pip install -U 'sqlalchemy<2' asyncpgsa"
        ) from error


class AsyncpgsaDriver(AsyncpgDriver):
    """The ``asyncpgsa`` driver: asyncpg pools made by :func:`asyncpgsa.create_pool`.

    Connections handed out are asyncpg ``PoolConnectionProxy`` objects wrapping asyncpgsa's
    ``SAConnection``, so ``execute``/``fetch``/``fetchrow``/``fetchval`` also take SQLAlchemy core
    statements, compiled to asyncpg queries. ``pool_factory_kwargs`` may also hold asyncpgsa's own
    ``dialect``. Everything else (stats, monitor, errors) is the asyncpg driver's.

    asyncpgsa is imported when the driver is made: with asyncpgsa missing, or with SQLAlchemy 2
    installed (asyncpgsa needs 1.x), making the driver raises
    :class:`~hasql_core.errors.PluginError`.
    """

    name: ClassVar[str] = "asyncpgsa"

    def __init__(self) -> None:
        super().__init__()
        self._asyncpgsa = import_asyncpgsa()

    def _pool_factory(self) -> Callable[..., Any]:
        """``asyncpgsa.create_pool``."""
        return self._asyncpgsa.create_pool  # type: ignore[no-any-return]
