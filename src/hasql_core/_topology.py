"""The cluster as the monitor sees it: one :class:`HostEntry` per host and the candidate sets derived
from their states.

The monitor calls :meth:`Topology.update` after every probe. Everything the acquire path needs (the
writable primary, the standbys within the lag limit) is recomputed there, so choosing a host costs a few
attribute reads. Waiters (acquires waiting for a role, ``ready()``) are woken after every update.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from ._deadline import TimerWheel, set_done
from ._events import Events
from .driver import Driver, PoolStats
from .dsn import Dsn
from .host_state import HostState, Role


def timeline_winner(timelines: Sequence[int | None]) -> int | None:
    """Index of the one primary on the highest timeline (unknown counts as 0), or ``None`` when
    there is no primary or the highest timeline is shared."""
    if not timelines:
        return None
    top = max(t or 0 for t in timelines)
    best = [i for i, t in enumerate(timelines) if (t or 0) == top]
    return best[0] if len(best) == 1 else None


def with_standby_lag(state: HostState, primary_lsn: int | None) -> HostState:
    """``state`` (a standby, ``lag_seconds`` holding its raw replay age) with its lag measured.

    Bytes: the primary's newest position (or the standby's own received position, if further
    ahead) minus the replay position, never below 0. Seconds: 0 when caught up, else the age of the
    last replayed transaction.
    """
    lag_bytes, lag_seconds = standby_lag(state, primary_lsn)
    return attrs.evolve(state, lag_bytes=lag_bytes, lag_seconds=lag_seconds)


def standby_lag(state: HostState, primary_lsn: int | None) -> tuple[int | None, float | None]:
    """``(lag_bytes, lag_seconds)`` of the standby ``state``, as :func:`with_standby_lag` sets."""
    if state.wal_lsn is None:
        return None, None
    reference = max(primary_lsn or 0, state.receive_lsn or 0)
    lag_bytes = max(reference - state.wal_lsn, 0)
    return lag_bytes, 0.0 if lag_bytes == 0 else state.lag_seconds


class HostEntry:
    """One host of the manager: its DSN, its pool (once opened), its latest state and its counters.

    Implements the :class:`~hasql_core.balancer.Candidate` protocol for balancer policies.
    """

    __slots__ = (
        "_driver",
        "_rtts",
        "_rtts_sorted",
        "_window",
        "acquire_count",
        "acquire_time",
        "capacity",
        "checks",
        "discarded",
        "dsn",
        "errors",
        "in_use",
        "pool",
        "response_time",
        "state",
        "suspect",
        "unavailable",
    )

    def __init__(self, dsn: Dsn, driver: Driver[Any, Any, Any], window: int) -> None:
        self.dsn = dsn
        self._driver = driver
        self.pool: Any = None
        self.state = HostState(host=dsn.host, port=dsn.port)
        #: ``not state.available``, kept as a plain attribute for the release path.
        self.unavailable = True
        #: When (``time.monotonic()``) a handed-out connection failed in a way that blames the
        #: host; cleared by the first probe that started after it.
        self.suspect: float | None = None
        self._rtts: deque[float] = deque()
        #: The same round-trip times in order, so the median is two index reads.
        self._rtts_sorted: list[float] = []
        self._window = window
        #: Median probe round-trip time over the stopwatch window (seconds), None before any probe.
        self.response_time: float | None = None
        #: Completed probes (successful or not).
        self.checks = 0
        self.acquire_count = 0
        self.acquire_time = 0.0
        #: The pool's ``max`` size, read when the pool was opened.
        self.capacity = 0
        #: Connections of this host handed out by the manager and not given back yet, plus the
        #: manager's acquires waiting in its pool.
        self.in_use = 0
        #: Connections closed instead of released (see ``Driver.discard``).
        self.discarded = 0
        #: Failures by kind: probe errors, and errors seen on handed-out connections.
        self.errors: dict[str, int] = {}

    def pool_stats(self) -> PoolStats:
        """The pool's figures; all zero while the pool is not open."""
        if self.pool is None:
            return PoolStats(0, 0, 0, 0, 0)
        return self._driver.pool_stats(self.pool)

    def free_size(self) -> int:
        """Acquires the pool can serve now without waiting: its capacity minus the connections
        handed out and the acquires waiting for one (below 0: that many are queued); 0 while the
        pool is not open. Counted by the manager, no driver call."""
        return 0 if self.pool is None else self.capacity - self.in_use

    def record_rtt(self, rtt: float) -> None:
        """Add one probe round-trip time to the stopwatch window."""
        rtts, ordered = self._rtts, self._rtts_sorted
        if len(rtts) == self._window:
            del ordered[bisect.bisect_left(ordered, rtts.popleft())]
        rtts.append(rtt)
        bisect.insort(ordered, rtt)
        middle = len(ordered) // 2
        self.response_time = (
            ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
        )

    def count_error(self, kind: str) -> None:
        """Count one failure of the given kind."""
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def __repr__(self) -> str:
        return f"<HostEntry {self.state.describe()}>"


@attrs.frozen
class LagLimit:
    """A replica lag limit: in seconds and/or bytes of WAL; ``None`` parts are not limited."""

    seconds: float | None = None
    bytes: int | None = None

    @property
    def unlimited(self) -> bool:
        """True when neither part is set."""
        return self.seconds is None and self.bytes is None

    def exceeded_by(self, state: HostState) -> bool:
        """True when ``state`` (a standby) is beyond this limit, or its lag is unknown while limited."""
        return self.exceeded(state.lag_bytes, state.lag_seconds)

    def exceeded(self, lag_bytes: int | None, lag_seconds: float | None) -> bool:
        """True when a standby lagging this much is beyond the limit (unknown lag counts as beyond)."""
        if self.bytes is not None and (lag_bytes is None or lag_bytes > self.bytes):
            return True
        return self.seconds is not None and (lag_seconds is None or lag_seconds > self.seconds)


def _usable(entry: HostEntry) -> bool:
    return entry.pool is not None and entry.suspect is None


class Topology:
    """The hosts' states and the candidate sets routing reads from them."""

    def __init__(self, entries: Sequence[HostEntry], lag_limit: LagLimit, events: Events) -> None:
        self.entries = tuple(entries)
        #: DSN position of each entry: the candidate sets keep DSN order.
        self._position = {entry: index for index, entry in enumerate(self.entries)}
        self.lag_limit = lag_limit
        #: The timers of the monitors and of the acquire path (one per manager).
        self.wheel = TimerWheel()
        self._events = events
        #: The primary that takes writes, when there is exactly one winner with an open pool.
        self.writable: HostEntry | None = None
        #: Available standbys with an open pool, whatever their lag.
        self.standbys: tuple[HostEntry, ...] = ()
        #: The subset of :attr:`standbys` within the manager's lag limit.
        self.fresh_standbys: tuple[HostEntry, ...] = ()
        #: The primary that won the timeline comparison, whether or not its pool is open yet.
        self.primary: HostEntry | None = None
        #: Primaries tied on the highest timeline; non-empty means writes are refused.
        self.split_brain_tie: tuple[HostEntry, ...] = ()
        #: Newest WAL position reported by the writable primary.
        self.primary_lsn: int | None = None
        #: Set when a pool can never be made (see :meth:`fail_setup`).
        self.setup_error: Exception | None = None
        self._split_brain_seen: frozenset[str] = frozenset()
        self._waiters: set[asyncio.Future[None]] = set()

    # -- updates (monitor side) ----------------------------------------------------------------------

    def update(
        self,
        entry: HostEntry,
        state: HostState,
        probe_started: float,
        pool_opened: bool = False,
        lag_allowance: float = 0.0,
    ) -> None:
        """Record a new state for ``entry`` (lag and staleness are filled in here) and recompute.

        ``probe_started`` is the ``time.monotonic()`` at which the probe began: only a probe that
        began after the host was suspected clears the suspicion. ``pool_opened``: the host's pool
        was opened by this check, so it may have just become a candidate. ``lag_allowance``:
        seconds a standby that is behind may have aged since its replay age was measured (and a
        safety margin); it is stale when its age plus this passes the limit. A standby that was
        stale and replayed nothing since stays stale: its data only got older.
        """
        old = entry.state
        if state.role is Role.STANDBY:
            lag_bytes, lag_seconds = standby_lag(state, self.primary_lsn)
            aged = lag_seconds
            if lag_bytes and lag_seconds is not None:
                aged = lag_seconds + lag_allowance
            stale = self.lag_limit.exceeded(lag_bytes, aged) or (
                old.stale
                and bool(lag_bytes)
                and old.role is Role.STANDBY
                and state.wal_lsn == old.wal_lsn
            )
            state = attrs.evolve(
                state,
                lag_bytes=lag_bytes,
                lag_seconds=lag_seconds,
                stale=stale,
                split_brain=old.split_brain,
            )
        elif old.split_brain:
            state = attrs.evolve(state, split_brain=True)
        cleared = entry.suspect is not None and probe_started >= entry.suspect
        if cleared:
            entry.suspect = None
        self._set_state(entry, state)
        # Most probes change only positions and timings: the candidate sets (which hold the
        # entries, not copies of their states) stay right, so skip the O(hosts) recompute.
        if (
            pool_opened
            or cleared
            or old.routing_key() != entry.state.routing_key()
            or (old.timeline != state.timeline and state.role is Role.PRIMARY)
        ):
            self._refresh(entry, old.role)
        if entry is self.primary and state.wal_lsn is not None:
            self.primary_lsn = max(self.primary_lsn or 0, state.wal_lsn)

    def fail_setup(self, error: Exception) -> None:
        """Record that a pool can never be made (``PoolSetupError``) and wake every waiter, which
        then raises it: waiting would only end in a timeout that hides the cause."""
        if self.setup_error is None:
            self.setup_error = error
        self.wake_waiters()

    def mark_stale(self, entry: HostEntry) -> None:
        """Treat the standby ``entry`` as beyond the lag limit until its next probe says otherwise."""
        if entry.state.role is Role.STANDBY and not entry.state.stale:
            self._set_state(entry, attrs.evolve(entry.state, stale=True))
            self._refresh(entry, Role.STANDBY)

    def suspect(self, entry: HostEntry, since: float | None = None) -> None:
        """Take ``entry`` out of the candidate sets until the result of a probe begun at or after
        ``since`` (default: now, ``time.monotonic()``) arrives."""
        if entry.suspect is None:
            entry.suspect = time.monotonic() if since is None else since
            self._refresh(entry, entry.state.role)

    def _set_state(self, entry: HostEntry, state: HostState) -> None:
        old = entry.state
        entry.state = state
        entry.unavailable = not state.available
        if old.routing_key() != state.routing_key():
            self._events.host_state_changed(old, state)

    def _refresh(self, entry: HostEntry, old_role: Role) -> None:
        """Bring the candidate sets up to date after ``entry`` changed, then wake every waiter.

        A change that involves no primary (a standby came, went, or crossed the lag limit) moves
        only ``entry`` in or out of the standby sets, in O(log hosts) comparisons; anything
        touching a primary recomputes everything (timelines, split brain).
        """
        if old_role is Role.PRIMARY or entry.state.role is Role.PRIMARY:
            self.recompute()
            return
        standby = entry.state.role is Role.STANDBY and _usable(entry)
        self.standbys = self._placed(self.standbys, entry, standby)
        self.fresh_standbys = self._placed(
            self.fresh_standbys, entry, standby and not entry.state.stale
        )
        self.wake_waiters()

    def _placed(
        self, group: tuple[HostEntry, ...], entry: HostEntry, member: bool
    ) -> tuple[HostEntry, ...]:
        """``group`` (in DSN order) with ``entry`` in it when ``member``, else without it."""
        if (entry in group) == member:
            return group
        if not member:
            index = group.index(entry)
            return group[:index] + group[index + 1 :]
        index = bisect.bisect(group, self._position[entry], key=self._position.__getitem__)
        return (*group[:index], entry, *group[index:])

    def recompute(self) -> None:
        """Derive the candidate sets from the current states, then wake every waiter."""
        primaries = [e for e in self.entries if e.state.role is Role.PRIMARY]
        index = timeline_winner([e.state.timeline for e in primaries])
        winner = None if index is None else primaries[index]
        tie: tuple[HostEntry, ...] = ()
        if primaries and winner is None:
            top = max(e.state.timeline or 0 for e in primaries)
            tie = tuple(e for e in primaries if (e.state.timeline or 0) == top)
        for entry in primaries:
            loser = len(primaries) > 1 and entry is not winner
            if entry.state.split_brain != loser:
                self._set_state(entry, attrs.evolve(entry.state, split_brain=loser))
        for entry in self.entries:  # a host that is no longer primary is no longer a loser
            if entry.state.split_brain and entry.state.role is not Role.PRIMARY:
                self._set_state(entry, attrs.evolve(entry.state, split_brain=False))
        self._report_split_brain(primaries, winner)
        self.split_brain_tie = tie
        self.primary = winner
        self.writable = winner if winner is not None and _usable(winner) else None
        self.standbys = tuple(
            e for e in self.entries if e.state.role is Role.STANDBY and _usable(e)
        )
        self.fresh_standbys = tuple(e for e in self.standbys if not e.state.stale)
        self.wake_waiters()

    def _report_split_brain(self, primaries: list[HostEntry], winner: HostEntry | None) -> None:
        seen = frozenset(e.state.name for e in primaries) if len(primaries) > 1 else frozenset()
        if seen and seen != self._split_brain_seen:
            self._events.split_brain(
                [e.state for e in primaries], None if winner is None else winner.state
            )
        self._split_brain_seen = seen

    # -- queries (acquire side) ----------------------------------------------------------------------

    def standbys_within(self, limit: LagLimit | None) -> tuple[HostEntry, ...]:
        """Standbys within ``limit`` (``None``: the manager's own limit)."""
        if limit is None:
            return self.fresh_standbys
        if limit.unlimited:
            return self.standbys
        return tuple(e for e in self.standbys if not limit.exceeded_by(e.state))

    def states(self) -> tuple[HostState, ...]:
        """Every host's current state, in DSN order."""
        return tuple(e.state for e in self.entries)

    def describe(self) -> str:
        """Every host in one line each, for error messages."""
        return "; ".join(e.state.describe() for e in self.entries)

    # -- waiting -------------------------------------------------------------------------------------

    async def wait_for_update(self, deadline: float | None) -> None:
        """Return at the next update, or when ``loop.time()`` reaches ``deadline`` (None: no bound)."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.add(waiter)
        timer = None if deadline is None else loop.call_at(deadline, set_done, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self._waiters.discard(waiter)

    def wake_waiters(self) -> None:
        """Resolve every pending waiter."""
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            set_done(waiter)
