"""Figures ``PoolManager.metrics()`` returns: per host, plus hasql's compatible summary."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from .driver import PoolStats
from .host_state import HostState

if TYPE_CHECKING:
    from ._topology import HostEntry


@attrs.frozen
class DriverMetrics:
    """hasql's per-pool figures: sizes, and the host (``host:port``) they belong to."""

    max: int
    min: int
    idle: int
    used: int
    host: str


@attrs.frozen
class HasqlMetrics:
    """hasql's manager figures: acquires and their total time, keyed by ``host:port``."""

    pool: int
    pool_time: float
    acquire: Mapping[str, int]
    acquire_time: Mapping[str, float]
    add_connections: Mapping[str, int]
    remove_connections: Mapping[str, int]


@attrs.frozen
class HostMetrics:
    """Everything known about one host: state (role, availability, lag, probe time), pool figures,
    acquires served and the total time they took (seconds), failures counted by kind, and
    connections discarded (closed instead of given back: interrupted statements, host failures,
    releases that took longer than ``release_timeout``).
    """

    state: HostState
    pool: PoolStats
    response_time: float | None
    acquire_count: int
    acquire_time: float
    errors: Mapping[str, int]
    discarded: int = 0
    #: True while the host is held back from new acquires until its next probe answers (a
    #: connection to it failed, or its probe is far slower than usual).
    held_back: bool = False


@attrs.frozen
class Metrics:
    """A snapshot of the manager. ``drivers`` and ``hasql`` keep hasql's shape; ``hosts`` and
    ``waiting_acquires`` (acquires waiting now for a host of the role they need) are new."""

    drivers: Sequence[DriverMetrics]
    hasql: HasqlMetrics
    hosts: Sequence[HostMetrics]
    waiting_acquires: int = 0


def build_metrics(
    entries: Sequence[HostEntry],
    handed_out_from: Iterable[HostEntry],
    pool_waits: int,
    pool_wait_time: float,
    waiting_acquires: int = 0,
) -> Metrics:
    """The :class:`Metrics` of a manager with hosts ``entries``; ``handed_out_from`` names the host
    of every connection out now, ``pool_waits``/``pool_wait_time`` count ``get_pool()`` calls."""
    hosts = []
    drivers = []
    for entry in entries:
        stats = entry.pool_stats()
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
            drivers.append(
                DriverMetrics(
                    max=stats.max,
                    min=stats.min,
                    idle=stats.idle,
                    used=stats.in_use,
                    host=entry.state.name,
                )
            )
    out: dict[str, int] = {}
    for entry in handed_out_from:
        out[entry.state.name] = out.get(entry.state.name, 0) + 1
    hasql = HasqlMetrics(
        pool=pool_waits,
        pool_time=pool_wait_time,
        acquire={e.state.name: e.acquire_count for e in entries},
        acquire_time={e.state.name: e.acquire_time for e in entries},
        add_connections={e.state.name: e.acquire_count for e in entries},
        remove_connections={
            e.state.name: e.acquire_count - out.get(e.state.name, 0) for e in entries
        },
    )
    return Metrics(drivers=drivers, hasql=hasql, hosts=hosts, waiting_acquires=waiting_acquires)
