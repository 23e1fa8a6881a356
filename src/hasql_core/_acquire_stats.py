"""Acquire-path figures kept only when asked for: per host, how long acquires waited and
connections were used (in fixed buckets), pool timeouts and acquires waiting in the pool; per
manager, reads refused for lag and acquires no host could serve in time.

Nothing here runs unless :meth:`PoolManager.enable_acquire_stats` was called: the manager then holds
an :class:`AcquireRecorder` and the acquire and release paths update it with a few integer and float
operations (measured in ``bench/``: well under 1 µs per acquire and release). With stats off,
the acquire and release paths do not even check for them: enabling them swaps in a counting
acquire around the plain one. Readers take an
immutable :class:`AcquireStats` snapshot through ``PoolManager.acquire_stats()``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from ._acquire import AcquireRequest
    from ._topology import HostEntry, Topology

#: Upper bounds (inclusive, seconds) of the buckets of :class:`TimeHistogram`: from 100 µs (a free
#: connection handed out at once) to a minute (a long transaction), about 2.5x apart.
BOUNDARIES: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


@attrs.frozen
class TimeHistogram:
    """Durations counted in fixed buckets.

    ``counts[i]`` durations fell in bucket ``i``: above ``boundaries[i - 1]`` (0 for the first) and at
    most ``boundaries[i]``; the last bucket (index ``len(boundaries)``) holds everything above the
    last boundary. ``sums[i]`` is the total, in seconds, of the durations in bucket ``i`` (so
    ``sums[i] / counts[i]`` is their mean, which lies inside the bucket). Counts only grow.
    """

    boundaries: tuple[float, ...]
    counts: tuple[int, ...]
    sums: tuple[float, ...]

    @property
    def count(self) -> int:
        """How many durations were counted."""
        return sum(self.counts)

    @property
    def sum(self) -> float:
        """Their total, in seconds."""
        return sum(self.sums)


@attrs.frozen
class HostAcquireStats:
    """One host's acquire figures since they were enabled.

    - ``wait_time``: per connection handed out from this host's pool, the time from the call of
      ``acquire()`` until the connection was handed out (waiting for a suitable host included).
    - ``use_time``: per connection given back, the time from hand-out to ``release()`` (or the end of
      the ``async with`` block), on ``time.monotonic()``.
    - ``timeouts``: acquires that timed out waiting for a free connection in this host's pool.
    - ``pending``: acquires waiting now for a connection from this host's pool.
    """

    host: str
    wait_time: TimeHistogram
    use_time: TimeHistogram
    timeouts: int
    pending: int


@attrs.frozen
class AcquireStats:
    """A snapshot of the acquire figures of a manager.

    ``hosts`` follows the DSN order. ``lag_refusals`` counts reads that found every available
    replica beyond the lag limit (counted once per acquire, whether it then fell back to the primary,
    waited or timed out). ``unserved_timeouts`` counts acquires that timed out because no host could
    serve them, by what they asked for: ``"primary"`` or ``"replica"``.
    """

    hosts: tuple[HostAcquireStats, ...]
    lag_refusals: int
    unserved_timeouts: Mapping[str, int]


class HostCounters:
    """The mutable figures of one host (see :class:`HostAcquireStats`): bucket counts and sums
    of wait and use times, timeouts."""

    __slots__ = ("timeouts", "use_counts", "use_sums", "wait_counts", "wait_sums")

    def __init__(self) -> None:
        self.wait_counts = [0] * (len(BOUNDARIES) + 1)
        self.wait_sums = [0.0] * (len(BOUNDARIES) + 1)
        self.use_counts = [0] * (len(BOUNDARIES) + 1)
        self.use_sums = [0.0] * (len(BOUNDARIES) + 1)
        self.timeouts = 0

    def waited(self, seconds: float) -> None:
        """A connection was handed out ``seconds`` after its acquire began."""
        index = bisect_left(BOUNDARIES, seconds)
        self.wait_counts[index] += 1
        self.wait_sums[index] += seconds

    def used(self, seconds: float) -> None:
        """A connection is given back ``seconds`` after it was handed out."""
        index = bisect_left(BOUNDARIES, seconds)
        self.use_counts[index] += 1
        self.use_sums[index] += seconds


class AcquireRecorder:
    """What the acquire and release paths update once acquire stats are enabled.

    Used from the event loop's thread only; :meth:`snapshot` gives readers an immutable copy.
    """

    __slots__ = ("handed_out_at", "hosts", "lag_refusals", "unserved")

    def __init__(self, entries: Iterable[HostEntry]) -> None:
        #: Each host's counters.
        self.hosts = {entry: HostCounters() for entry in entries}
        #: id of each connection handed out since stats were enabled -> ``time.monotonic()`` then.
        self.handed_out_at: dict[int, float] = {}
        self.lag_refusals = 0
        self.unserved = {"primary": 0, "replica": 0}

    def served(self, entry: HostEntry, connection: Any, seconds: float) -> None:
        """``connection`` was handed out from ``entry``'s pool ``seconds`` after its acquire
        began."""
        self.hosts[entry].waited(seconds)
        self.handed_out_at[id(connection)] = monotonic()

    def pool_timed_out(self, host: str) -> None:
        """An acquire timed out waiting for a free connection in the pool of ``host``."""
        for entry, counters in self.hosts.items():
            if entry.state.name == host:
                counters.timeouts += 1

    def given_back(self, entry: HostEntry, connection: Any) -> None:
        """``connection`` of ``entry`` is given back: count its use time."""
        handed_out_at = self.handed_out_at.pop(id(connection), None)
        if handed_out_at is not None:
            self.hosts[entry].used(monotonic() - handed_out_at)

    def no_host(self, topology: Topology, request: AcquireRequest) -> None:
        """An acquire found no host to serve it (first time only): count a lag refusal when it is a
        read and every available replica is beyond its lag limit."""
        if (
            request.read_only
            and request.entry is None
            and topology.standbys
            and not topology.standbys_within(request.lag_limit)
        ):
            self.lag_refusals += 1

    def read_on_primary(self, topology: Topology, request: AcquireRequest) -> None:
        """A read is served by the primary: a lag refusal when replicas are available but all
        beyond its lag limit (it fell back)."""
        if (
            request.entry is None
            and topology.standbys
            and not topology.standbys_within(request.lag_limit)
        ):
            self.lag_refusals += 1

    def timed_out(self, request: AcquireRequest) -> None:
        """An acquire timed out because no host could serve it."""
        self.unserved["replica" if request.read_only else "primary"] += 1

    def snapshot(
        self, entries: Iterable[HostEntry], handed_out: Mapping[HostEntry, int]
    ) -> AcquireStats:
        """An immutable copy, hosts in the order of ``entries``; ``handed_out`` counts the
        connections each host has out now (a host's acquires waiting in its pool are the rest
        of its ``in_use``)."""
        hosts = []
        for entry in entries:
            counters = self.hosts[entry]
            hosts.append(
                HostAcquireStats(
                    host=entry.state.name,
                    wait_time=TimeHistogram(
                        BOUNDARIES, tuple(counters.wait_counts), tuple(counters.wait_sums)
                    ),
                    use_time=TimeHistogram(
                        BOUNDARIES, tuple(counters.use_counts), tuple(counters.use_sums)
                    ),
                    timeouts=counters.timeouts,
                    pending=max(entry.in_use - handed_out.get(entry, 0), 0),
                )
            )
        return AcquireStats(tuple(hosts), self.lag_refusals, dict(self.unserved))
