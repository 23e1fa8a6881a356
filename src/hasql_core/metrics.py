"""Figures ``PoolManager.metrics()`` returns.

The records are frozen dataclasses shaped like hasql 0.10's, so code written for hasql keeps working
(``m.pools``, ``m.hasql``, ``m.gauges``, ``dataclasses.asdict(m)``); ``m.drivers`` keeps hasql 0.9's
shape. ``m.hosts`` and ``m.waiting_acquires`` are richer figures of this library.

:class:`AcquireStats` (with :class:`HostAcquireStats` and :class:`TimeHistogram`, whose bucket
bounds are :data:`TIME_BUCKETS`) is what ``PoolManager.acquire_stats()`` returns once
``enable_acquire_stats()`` was called.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._acquire_stats import BOUNDARIES as TIME_BUCKETS
from ._acquire_stats import AcquireStats, HostAcquireStats, TimeHistogram
from .driver import PoolStats
from .host_state import HostState, Role

if TYPE_CHECKING:
    from ._topology import HostEntry

__all__ = [
    "TIME_BUCKETS",
    "AcquireStats",
    "DriverMetrics",
    "HasqlGauges",
    "HasqlMetrics",
    "HostAcquireStats",
    "HostMetrics",
    "Metrics",
    "PoolMetrics",
    "PoolRole",
    "PoolStaleness",
    "TimeHistogram",
    "build_metrics",
]


class PoolRole(str, enum.Enum):
    """hasql's name for the role a pool serves."""

    MASTER = "master"
    REPLICA = "replica"


class PoolStaleness(str, enum.Enum):
    """Whether a replica is within the lag limit (hasql 0.10's staleness)."""

    FRESH = "fresh"
    STALE = "stale"


@dataclass(frozen=True)
class DriverMetrics:
    """hasql 0.9's per-pool figures: sizes, and the host (``host:port``) they belong to."""

    max: int
    min: int
    idle: int
    used: int
    host: str


@dataclass(frozen=True)
class HasqlMetrics:
    """hasql's manager figures, keyed by ``host:port``.

    ``pool``/``pool_time``: acquires (and ``get_pool()`` calls) and the total seconds they spent
    choosing a host, waiting included. ``acquire``/``acquire_time``: acquires served per host and
    their total seconds. ``add_connections``/``remove_connections``: connections handed out and
    given back per host.
    """

    pool: int
    pool_time: float
    acquire: Mapping[str, int]
    acquire_time: Mapping[str, float]
    add_connections: Mapping[str, int]
    remove_connections: Mapping[str, int]


@dataclass(frozen=True)
class PoolMetrics:
    """hasql 0.10's per-pool figures. ``role`` is None for a host that serves neither role now
    (unavailable, held back, or a split-brain loser); ``lag`` holds ``bytes`` and ``time`` (a
    ``timedelta``) for a replica; ``response_time`` is the median probe time in seconds;
    ``in_flight`` counts connections handed out by the manager."""

    host: str
    role: PoolRole | None
    healthy: bool
    min: int
    max: int
    idle: int
    used: int
    response_time: float | None
    in_flight: int
    extra: dict[str, Any] = field(default_factory=dict)
    staleness: PoolStaleness | None = None
    lag: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class HasqlGauges:
    """hasql 0.10's snapshot of the manager: usable primaries and (fresh) replicas, available
    hosts, connections handed out, lifecycle flags, unavailable hosts and stale replicas."""

    master_count: int
    replica_count: int
    available_count: int
    active_connections: int
    closing: bool
    closed: bool
    unavailable_count: int = 0
    stale_count: int = 0


@dataclass(frozen=True)
class HostMetrics:
    """Everything known about one host: state (role, availability, lag, probe time), pool figures,
    acquires served and the total time they took (seconds), failures counted by kind, connections
    discarded (closed instead of given back: interrupted statements, host failures, releases that
    took longer than ``release_timeout``), and whether the host is held back from new acquires
    until its next probe answers (a connection to it failed, or its probe is far slower than usual).
    """

    state: HostState
    pool: PoolStats
    response_time: float | None
    acquire_count: int
    acquire_time: float
    errors: Mapping[str, int]
    discarded: int = 0
    held_back: bool = False


@dataclass(frozen=True)
class Metrics:
    """A snapshot of the manager: hasql 0.10's ``pools``, ``hasql`` and ``gauges``, plus ``hosts``
    (one :class:`HostMetrics` per host, in DSN order) and ``waiting_acquires`` (acquires waiting
    now for a host of the role they need)."""

    pools: Sequence[PoolMetrics]
    hasql: HasqlMetrics
    gauges: HasqlGauges
    hosts: Sequence[HostMetrics] = ()
    waiting_acquires: int = 0
    #: Reads of causal sessions the primary served because no standby had their writes in time.
    causal_primary_reads: int = 0
    #: Causal session tokens found beyond the new primary's history after a failover (lost writes).
    causal_tokens_lost: int = 0

    @property
    def drivers(self) -> list[DriverMetrics]:
        """hasql 0.9's per-pool figures, one per open pool."""
        return [DriverMetrics(p.max, p.min, p.idle, p.used, p.host) for p in self.pools]


@dataclass(frozen=True)
class ManagerFigures:
    """What :func:`build_metrics` needs from the manager besides its hosts."""

    handed_out_from: Iterable[HostEntry]
    pool_waits: int
    pool_wait_time: float
    waiting_acquires: int
    writable: HostEntry | None
    fresh_standbys: Sequence[HostEntry]
    standbys: Sequence[HostEntry]
    closing: bool
    closed: bool
    causal_primary_reads: int = 0
    causal_tokens_lost: int = 0


def _pool_metrics(
    entry: HostEntry, stats: PoolStats, in_flight: int, figures: ManagerFigures
) -> PoolMetrics:
    state = entry.state
    role: PoolRole | None = None
    staleness: PoolStaleness | None = None
    lag: dict[str, Any] = {}
    if entry is figures.writable:
        role = PoolRole.MASTER
    elif state.role is Role.STANDBY and entry in figures.standbys:
        role = PoolRole.REPLICA
        staleness = PoolStaleness.FRESH if entry in figures.fresh_standbys else PoolStaleness.STALE
        if state.lag_bytes is not None:
            lag["bytes"] = state.lag_bytes
        if state.lag_seconds is not None:
            lag["time"] = datetime.timedelta(seconds=state.lag_seconds)
    return PoolMetrics(
        host=state.name,
        role=role,
        healthy=role is not None,
        min=stats.min,
        max=stats.max,
        idle=stats.idle,
        used=stats.in_use,
        response_time=entry.response_time,
        in_flight=in_flight,
        staleness=staleness,
        lag=lag,
    )


def build_metrics(entries: Sequence[HostEntry], figures: ManagerFigures) -> Metrics:
    """The :class:`Metrics` of a manager whose hosts are ``entries``."""
    out: dict[str, int] = {}
    for entry in figures.handed_out_from:
        out[entry.state.name] = out.get(entry.state.name, 0) + 1
    hosts = []
    pools = []
    for entry in entries:
        stats = entry.pool_stats()
        name = entry.state.name
        hosts.append(
            HostMetrics(
                entry.state,
                stats,
                entry.response_time,
                entry.acquire_count,
                entry.acquire_time,
                dict(entry.errors),
                entry.discarded,
                entry.suspect is not None,
            )
        )
        if entry.pool is not None:
            pools.append(_pool_metrics(entry, stats, out.get(name, 0), figures))
    hasql = HasqlMetrics(
        pool=figures.pool_waits,
        pool_time=figures.pool_wait_time,
        acquire={e.state.name: e.acquire_count for e in entries},
        acquire_time={e.state.name: e.acquire_time for e in entries},
        add_connections={e.state.name: e.acquire_count for e in entries},
        remove_connections={
            e.state.name: e.acquire_count - out.get(e.state.name, 0) for e in entries
        },
    )
    available = sum(1 for e in entries if e.state.available and e.pool is not None)
    gauges = HasqlGauges(
        master_count=0 if figures.writable is None else 1,
        replica_count=len(figures.fresh_standbys),
        available_count=available,
        active_connections=sum(out.values()),
        closing=figures.closing,
        closed=figures.closed,
        unavailable_count=sum(1 for e in entries if e.pool is not None) - available,
        stale_count=len(figures.standbys) - len(figures.fresh_standbys),
    )
    return Metrics(
        pools=pools,
        hasql=hasql,
        gauges=gauges,
        hosts=hosts,
        waiting_acquires=figures.waiting_acquires,
        causal_primary_reads=figures.causal_primary_reads,
        causal_tokens_lost=figures.causal_tokens_lost,
    )
