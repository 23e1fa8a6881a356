"""Read-your-writes: causal sessions whose reads never return older data than their own writes.

A :class:`CausalSession` remembers the primary's WAL position after each of its writes (its
*token*). Its reads go only to a standby that has replayed at least that far, as the monitor last saw
it; when none has, the read waits briefly for one to catch up (probing every host fast), then is
served by the primary, which always has the write, and is counted. A token is an opaque string: carry
it across requests or processes (a cookie, a header, a task payload) and resume with
``pm.causal_session(token)``; inside one request, :func:`causal_scope` makes the plain ``pm.acquire*``
calls use the session.

Tokens name the timeline they were taken on. After a failover, a token from the old timeline is
served by a standby on the new timeline that has replayed past its position, or by the new primary.
A write lost in the failover (an asynchronous standby was promoted before it arrived) cannot be
read anywhere; the session then re-anchors on the new primary's position and says so once in the log
(``causal_token_lost`` in the counters): reads never wait for a position that no host will reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import attrs

from ._acquire import AcquireContext, AcquireRequest
from ._deadline import within
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._topology import HostEntry
    from .manager import PoolManager

__all__ = ["CausalSession", "CausalToken", "causal_scope", "current_session"]

log = logging.getLogger("hasql_core")

#: The primary's position and timeline, read on a connection to it after a write (one round trip).
POSITION_QUERY = (
    "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, "
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint"
)
#: How long a read waits for a standby to replay the session's token before the primary serves it,
#: unless the session is given another bound. A standby in sync is there within a probe or two.
DEFAULT_CATCH_UP = 0.2
_PREFIX = "hasql-causal-1"


@attrs.frozen(order=False)
class CausalToken:
    """A WAL position (bytes) on a timeline; its ``str`` is the opaque token carried by users."""

    timeline: int
    lsn: int

    def __str__(self) -> str:
        return f"{_PREFIX}:{self.timeline:x}:{self.lsn:x}"

    @classmethod
    def parse(cls, text: str) -> CausalToken:
        """The token ``text`` (as ``str(token)`` wrote it); :class:`ConfigurationError` otherwise."""
        parts = text.split(":") if isinstance(text, str) else []
        try:
            if len(parts) != 3 or parts[0] != _PREFIX:
                raise ValueError
            return cls(int(parts[1], 16), int(parts[2], 16))
        except ValueError:
            shown = text if isinstance(text, str) and len(text) <= 64 else type(text).__name__
            raise ConfigurationError(
                f"not a causal session token: {shown!r}. Pass the string a session's .token "
                f"returned (it starts with {_PREFIX!r}), or None for a new session."
            ) from None

    def satisfied_by(self, timeline: int | None, replayed: int | None) -> bool:
        """Whether a standby on ``timeline`` that replayed up to ``replayed`` has this position."""
        if timeline is None or replayed is None or timeline < self.timeline:
            return False
        return replayed >= self.lsn


class CausalSession:
    """Acquires that read their own writes (see the module docstring).

    ``acquire()``, ``acquire_master()`` and ``acquire_replica()`` take the manager's arguments and
    work the same ways (``await`` then ``await session.release(conn)``, or ``async with``). A write
    connection records the primary's position when it is given back (one short query on it; plain
    acquires outside sessions pay nothing). ``catch_up`` bounds how long a read waits for a standby to
    replay the token before the primary serves it (within the acquire's own timeout).
    """

    def __init__(
        self,
        manager: PoolManager,
        token: str | None = None,
        *,
        catch_up: float = DEFAULT_CATCH_UP,
    ) -> None:
        self._manager = manager
        self._token = None if token is None else CausalToken.parse(token)
        self._catch_up = catch_up
        #: Connections handed out through this session that were for writes.
        self._writers: set[int] = set()
        #: True when a write's position could not be read: reads go to the primary until the
        #: next write records one.
        self._position_unknown = False
        #: Reads that the primary served because no standby had replayed the token in time.
        self.primary_reads = 0
        #: Reads served by a standby that had replayed the token.
        self.standby_reads = 0

    @property
    def token(self) -> str | None:
        """The session's token: pass it to ``pm.causal_session(token)`` to resume the session."""
        return None if self._token is None else str(self._token)

    # -- acquiring --------------------------------------------------------------------------------

    def acquire(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AcquireContext:
        """Like ``PoolManager.acquire()``; a read only goes to a host that has the session's writes."""
        request = self._manager._requests.build(
            read_only, fallback_master, master_as_replica_weight, timeout, **kwargs
        )
        return AcquireContext(self, request)

    def acquire_master(self, timeout: float | None = None, **kwargs: Any) -> AcquireContext:
        """A connection to the primary; its writes are recorded in the token when it is released."""
        return self.acquire(False, timeout=timeout, **kwargs)

    def acquire_replica(
        self,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AcquireContext:
        """A connection to a replica that has replayed the session's writes (or to the primary)."""
        return self.acquire(True, fallback_master, master_as_replica_weight, timeout, **kwargs)

    async def release(self, connection: Any, **kwargs: Any) -> None:
        """Give back a connection taken with ``await session.acquire...()``."""
        await self._return(connection, None, kwargs)

    def owns(self, connection: Any) -> bool:
        """Whether ``connection`` is a write connection of this session not given back yet."""
        return id(connection) in self._writers

    def report_error(self, connection: Any, error: BaseException) -> None:
        """See ``PoolManager.report_error``."""
        self._manager.report_error(connection, error)

    async def _give_back(self, connection: Any, failure: BaseException | None) -> None:
        await self._return(connection, failure, {})

    async def _acquire(self, request: AcquireRequest, context: AcquireContext | None = None) -> Any:
        connection = await self._connection_for(request)
        if context is not None:
            context.entered(connection)
        return connection

    async def _connection_for(self, request: AcquireRequest) -> Any:
        manager = self._manager
        if not request.read_only:
            connection = await manager._acquire(request)
            self._writers.add(id(connection))
            return connection
        token = self._token
        if self._position_unknown:
            return await self._from_primary(request)
        if token is None:
            connection = await manager._acquire(request)
            return connection
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout
        catch_up_until = min(deadline, loop.time() + self._catch_up)
        waiting = False
        try:
            while True:
                entry = self._standby_with(token)
                if entry is not None:
                    pinned = request.pinned_to(entry)
                    connection = await manager._acquire(pinned)
                    self.standby_reads += 1
                    return connection
                if self._token_lost(token):
                    return await self._from_primary(request, re_anchor=True)
                if loop.time() >= catch_up_until:
                    break
                if not waiting:
                    waiting = True
                    manager._fast_probing.enter()
                with contextlib.suppress(asyncio.TimeoutError):
                    await manager._topology.wait_for_update(catch_up_until)
        finally:
            if waiting:
                manager._fast_probing.leave()
        return await self._from_primary(request)

    async def _from_primary(self, request: AcquireRequest, re_anchor: bool = False) -> Any:
        manager = self._manager
        connection = await manager._acquire(request.for_writes())
        self.primary_reads += 1
        manager._causal_primary_reads += 1
        if re_anchor:
            self._writers.add(id(connection))  # its release records the new timeline's position
        return connection

    def _standby_with(self, token: CausalToken) -> HostEntry | None:
        """A usable standby within the lag limit whose last probe shows it replayed ``token``."""
        manager = self._manager
        candidates = [
            e
            for e in manager._topology.standbys
            if token.satisfied_by(e.state.timeline, e.state.wal_lsn)
        ]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        chosen: HostEntry = manager._balancer.choose(candidates, True)  # type: ignore[assignment]
        return chosen

    def _token_lost(self, token: CausalToken) -> bool:
        """The primary is on a newer timeline that forked before ``token``: no host will ever
        replay it (the write was lost in a failover)."""
        primary = self._manager._topology.writable
        if primary is None:
            return False
        state = primary.state
        if state.timeline is None or state.timeline <= token.timeline:
            return False
        # The new timeline's standbys that replayed past the token have it (or its replacement);
        # the wait for them is bounded by catch_up. A token far ahead of the new primary's own
        # position can never be reached by anybody on the new timeline.
        return state.wal_lsn is not None and state.wal_lsn < token.lsn

    # -- giving back ------------------------------------------------------------------------------

    async def _return(
        self, connection: Any, failure: BaseException | None, kwargs: dict[str, Any]
    ) -> None:
        manager = self._manager
        wrote = id(connection) in self._writers
        self._writers.discard(id(connection))
        if wrote and failure is None:
            await self._record_position(connection)
        if failure is None and not kwargs:
            await manager._give_back(connection, None)
        elif kwargs:
            await manager.release(connection, **kwargs)
        else:
            await manager._give_back(connection, failure)

    async def _record_position(self, connection: Any) -> None:
        """Read the primary's position on ``connection`` and make it the token (never older)."""
        manager = self._manager
        try:
            row = await within(
                manager.driver.query_row(connection, POSITION_QUERY),
                manager._options.release_timeout,
            )
            position = CausalToken(int(row[1]), int(row[0]))
        except asyncio.CancelledError:
            self._position_unknown = True
            raise
        except Exception as error:  # the write may have committed: read from the primary
            self._position_unknown = True
            manager.report_error(connection, error)
            log.info(
                "could not read the primary's position after a write (%s); this causal session "
                "reads from the primary until its next write",
                type(error).__name__,
            )
            return
        self._position_unknown = False
        old = self._token
        if old is not None and old.timeline > position.timeline:
            return  # a stale primary answered; keep the newer token
        if old is not None and old.timeline < position.timeline and old.lsn > position.lsn:
            manager._causal_tokens_lost += 1
            log.warning(
                "a causal session's token %s is beyond what timeline %d holds: its write was lost "
                "in a failover; the session continues from the new primary's position",
                old,
                position.timeline,
            )
        if old is None or position.timeline > old.timeline or position.lsn >= old.lsn:
            self._token = position


_current: contextvars.ContextVar[CausalSession | None] = contextvars.ContextVar(
    "hasql_causal_session", default=None
)


def current_session() -> CausalSession | None:
    """The session of the innermost :func:`causal_scope` of this task, if any."""
    return _current.get()


@contextlib.contextmanager
def causal_scope(session: CausalSession) -> Iterator[CausalSession]:
    """Within the block, this task's plain ``pm.acquire*()`` calls on the session's manager go
    through ``session`` (tasks created inside inherit it, as with every contextvar)."""
    reset = _current.set(session)
    session._manager._causal_scopes += 1
    try:
        yield session
    finally:
        session._manager._causal_scopes -= 1
        _current.reset(reset)
