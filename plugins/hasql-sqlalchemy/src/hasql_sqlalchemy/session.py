"""ORM sessions routed by role: a session factory bound to a :class:`~hasql_core.PoolManager`.

``async_sessionmaker(pm)`` makes sessions that write (bound to a connection to the primary);
``async_sessionmaker(pm, read_only=True)`` makes sessions that read from a replica within the
manager's lag limit and refuse writes before they reach the server. Each session holds one
connection from the manager for its whole life and gives it back when it is closed::

    Session = async_sessionmaker(pm, expire_on_commit=False)
    ReadSession = async_sessionmaker(pm, read_only=True)

    async with Session() as session, session.begin():
        session.add(Item(name="x"))
    async with ReadSession() as session:
        items = (await session.scalars(select(Item))).all()
"""

from __future__ import annotations

import re
from collections.abc import Generator, Mapping
from types import TracebackType
from typing import Any, Generic, TypeVar

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from hasql_core import PoolManager
from hasql_core.errors import HasqlError

from .driver import settled

__all__ = [
    "ReadOnlySessionError",
    "RoutedAsyncSession",
    "RoutedSessionMaker",
    "async_sessionmaker",
    "is_write_statement",
]

S = TypeVar("S", bound="RoutedAsyncSession")


class ReadOnlySessionError(HasqlError):
    """A read-only session (``async_sessionmaker(pm, read_only=True)``) was asked to write.

    Raised before anything reaches the server: by a flush with new, changed or deleted objects, and
    by an INSERT, UPDATE, DELETE, MERGE, TRUNCATE or DDL statement executed on the session. It is
    the application's error, not the host's: the manager does not re-probe the host for it.
    """


# -- recognising writes -------------------------------------------------------------------------------

#: Statements that write, by their first keyword.
_WRITE_KEYWORDS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "MERGE",
        "TRUNCATE",
        "CREATE",
        "ALTER",
        "DROP",
        "GRANT",
        "REVOKE",
        "COMMENT",
        "REINDEX",
        "CLUSTER",
        "VACUUM",
        "REFRESH",
    }
)
#: Keywords that make a ``WITH`` statement write (a data-modifying common table expression).
_CTE_WRITES = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE"})
# What is not SQL words: comments, string literals, quoted identifiers, dollar-quoted bodies.
_NOT_WORDS = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|(\$[A-Za-z_0-9]*\$).*?\1",
    re.DOTALL,
)
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


def is_write_statement(sql: str) -> bool:
    """Whether the SQL text ``sql`` writes, judged from its words (comments and quoted text left
    out): its first keyword is one of INSERT, UPDATE, DELETE, MERGE, TRUNCATE or a DDL verb, or it
    is a ``WITH`` statement holding INSERT, UPDATE, DELETE or MERGE. Anything else (including a
    function that writes) is left to the server, which refuses writes on a standby and in the
    read-only transactions of read-only sessions."""
    words = _WORD.findall(_NOT_WORDS.sub(" ", sql))
    if not words:
        return False
    first = words[0].upper()
    if first in _WRITE_KEYWORDS:
        return True
    if first == "WITH":
        return any(word.upper() in _CTE_WRITES for word in words[1:])
    return False


def _refuse_writes(
    conn: Any,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """``before_cursor_execute`` listener of a read-only session's connection."""
    compiled_write = context is not None and (
        context.isinsert or context.isupdate or context.isdelete or context.isddl
    )
    if compiled_write or is_write_statement(statement):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else "statement"
        raise ReadOnlySessionError(
            f"this session is read-only (async_sessionmaker(..., read_only=True)): refused a "
            f"{verb} statement before it reached the server. Write with a session from a "
            "maker made with read_only=False."
        )


def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    """``before_flush`` listener of a read-only session."""
    new = len(session.new)
    deleted = len(session.deleted)
    changed = sum(1 for obj in session.dirty if session.is_modified(obj))
    if new or deleted or changed:
        raise ReadOnlySessionError(
            f"this session is read-only (async_sessionmaker(..., read_only=True)): refused to "
            f"flush {new} new, {changed} changed and {deleted} deleted object(s); nothing was "
            "sent to the server. Write with a session from a maker made with read_only=False, "
            "or expunge the objects."
        )


# -- sessions -------------------------------------------------------------------------------------------


class RoutedAsyncSession(AsyncSession):
    """An :class:`~sqlalchemy.ext.asyncio.AsyncSession` bound to one connection from a
    :class:`~hasql_core.PoolManager` for its whole life.

    ``await session.close()`` (also run by ``async with``) gives the connection back to the manager
    (rolling back what was not committed, bounded by the manager's release timeout), then closes
    the session as usual; the session can not run statements afterwards. Made by
    :class:`RoutedSessionMaker`, not directly.
    """

    _hasql_acquired: Any = None
    _hasql_connection: AsyncConnection | None = None
    _hasql_read_only: bool = False

    @property
    def read_only(self) -> bool:
        """Whether this session reads from a replica and refuses writes."""
        return self._hasql_read_only

    async def close(self) -> None:
        """Give the connection back to the manager, then close the session."""
        await self._hasql_end(None, None, None)

    async def _hasql_end(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Give the connection back (telling the manager how the session's use ended: a host
        failure or an interrupted statement makes it discard the connection), then close the
        session, which then has nothing to say to the server."""
        acquired, self._hasql_acquired = self._hasql_acquired, None
        connection = self._hasql_connection
        try:
            if acquired is not None:
                await acquired.__aexit__(exc_type, exc, tb)
        finally:
            if connection is not None:
                # The manager may have stopped waiting for a release still running: the session's
                # own close must not touch the connection at the same time.
                await settled(connection)
            await super().close()


_ROUTED: dict[type[AsyncSession], type[RoutedAsyncSession]] = {}


def _routed_class(base: type[AsyncSession]) -> type[RoutedAsyncSession]:
    """``base`` itself when it derives from :class:`RoutedAsyncSession`, else a subclass of both
    (made once per class)."""
    if issubclass(base, RoutedAsyncSession):
        return base
    if not issubclass(base, AsyncSession):
        raise TypeError(f"class_ must be a subclass of AsyncSession, got {base!r}")
    routed = _ROUTED.get(base)
    if routed is None:
        namespace = {"__module__": base.__module__}
        routed = type(base.__name__, (RoutedAsyncSession, base), namespace)
        _ROUTED[base] = routed
    return routed


class _SessionOpening(Generic[S]):
    """What calling a :class:`RoutedSessionMaker` returns: ``async with`` it, or ``await`` it.

    ``async with maker() as session:`` gives the connection back when the block ends, telling the
    manager about an exception that ended it; ``session = await maker()`` leaves that to
    ``await session.close()``.
    """

    __slots__ = ("_maker", "_overrides", "_session")

    def __init__(self, maker: RoutedSessionMaker[S], overrides: Mapping[str, Any]) -> None:
        self._maker = maker
        self._overrides = overrides
        self._session: S | None = None

    def __await__(self) -> Generator[Any, None, S]:
        return self._maker._open(self._overrides).__await__()

    async def __aenter__(self) -> S:
        if self._session is not None:
            raise RuntimeError("this session context is already in use; call the maker again")
        self._session = await self._maker._open(self._overrides)
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session._hasql_end(exc_type, exc, tb)


class RoutedSessionMaker(Generic[S]):
    """A factory of sessions bound to connections from a :class:`~hasql_core.PoolManager`.

    Calling it acquires a connection (to the primary; with ``read_only=True`` to a replica within
    the manager's lag limit, or the primary when ``fallback_master`` allows) and binds a new
    session to it; see :func:`async_sessionmaker`.
    """

    def __init__(
        self,
        pool_manager: PoolManager,
        *,
        read_only: bool,
        class_: type[AsyncSession],
        acquire_kwargs: Mapping[str, Any],
        session_kwargs: Mapping[str, Any],
    ) -> None:
        if "bind" in session_kwargs or "binds" in session_kwargs:
            raise TypeError(
                "routed sessions are bound to a connection from the pool manager; "
                "do not pass bind= or binds="
            )
        self.pool_manager = pool_manager
        self.read_only = read_only
        self.class_: type[S] = _routed_class(class_)  # type: ignore[assignment]
        self.acquire_kwargs = dict(acquire_kwargs)
        self.session_kwargs = dict(session_kwargs)

    def __call__(self, **overrides: Any) -> _SessionOpening[S]:
        """A new session, once awaited or entered (``overrides`` replace session arguments)."""
        if "bind" in overrides or "binds" in overrides:
            raise TypeError("do not pass bind= or binds= to a routed session maker")
        return _SessionOpening(self, overrides)

    def configure(self, **session_kwargs: Any) -> None:
        """Change the arguments of sessions made from now on (like SQLAlchemy's makers)."""
        if "bind" in session_kwargs or "binds" in session_kwargs:
            raise TypeError("do not pass bind= or binds= to a routed session maker")
        self.session_kwargs.update(session_kwargs)

    async def _open(self, overrides: Mapping[str, Any]) -> S:
        acquiring = self.pool_manager.acquire(read_only=self.read_only, **self.acquire_kwargs)
        connection: AsyncConnection = await acquiring.__aenter__()
        try:
            if self.read_only:
                # A read-only transaction on the server too (BEGIN READ ONLY: no extra round trip),
                # for reads that fall back to the primary and writes no client check can see.
                await connection.execution_options(postgresql_readonly=True)
                event.listen(connection.sync_connection, "before_cursor_execute", _refuse_writes)
            session = self.class_(bind=connection, **{**self.session_kwargs, **overrides})
            session._hasql_acquired = acquiring
            session._hasql_connection = connection
            session._hasql_read_only = self.read_only
            if self.read_only:
                event.listen(session.sync_session, "before_flush", _refuse_flush)
        except BaseException as error:
            await acquiring.__aexit__(type(error), error, error.__traceback__)
            raise
        return session

    def __repr__(self) -> str:
        role = "replica, read-only" if self.read_only else "primary"
        return f"<RoutedSessionMaker {self.class_.__name__} ({role}) of {self.pool_manager!r}>"


def async_sessionmaker(
    pool_manager: PoolManager,
    read_only: bool = False,
    *,
    class_: type[AsyncSession] = AsyncSession,
    fallback_master: bool | None = None,
    master_as_replica_weight: float | None = None,
    timeout: float | None = None,
    acquire_kwargs: Mapping[str, Any] | None = None,
    **session_kwargs: Any,
) -> RoutedSessionMaker[RoutedAsyncSession]:
    """A factory of ORM sessions routed by role through ``pool_manager``.

    - ``read_only=False``: each session is bound to a connection to the primary.
    - ``read_only=True``: each session is bound to a connection to a replica within the manager's
      lag limit (``fallback_master``, ``master_as_replica_weight``: as in
      :meth:`~hasql_core.PoolManager.acquire_replica`), runs read-only transactions on the
      server, and raises :class:`ReadOnlySessionError` for a write before it reaches the server:
      a flush of new, changed or deleted objects, or an INSERT, UPDATE, DELETE, MERGE, TRUNCATE
      or DDL statement.
    - ``timeout``: the acquire deadline (default: the manager's ``acquire_timeout``);
      ``acquire_kwargs``: further arguments of the manager's ``acquire()`` (hasql's name).
    - ``class_``: the session class (a subclass of ``AsyncSession``; combined with
      :class:`RoutedAsyncSession`); ``session_kwargs``: its arguments (``expire_on_commit``,
      ``autoflush``, ``info``, ...), except ``bind`` and ``binds``.

    ``async with maker() as session:`` holds one connection for the block and gives it back at
    its end (an exception that ended it is reported to the manager, which discards the connection
    and re-probes the host for host failures); ``session = await maker()`` holds it until
    ``await session.close()``.
    """
    acquire: dict[str, Any] = dict(acquire_kwargs or {})
    for key, value in (
        ("fallback_master", fallback_master),
        ("master_as_replica_weight", master_as_replica_weight),
        ("timeout", timeout),
    ):
        if value is not None:
            acquire[key] = value
    if not read_only and ("fallback_master" in acquire or "master_as_replica_weight" in acquire):
        raise TypeError("fallback_master and master_as_replica_weight apply to read_only=True")
    return RoutedSessionMaker(
        pool_manager,
        read_only=read_only,
        class_=class_,
        acquire_kwargs=acquire,
        session_kwargs=session_kwargs,
    )
