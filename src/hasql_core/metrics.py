"""Figures ``PoolManager.metrics()`` returns: per host, plus hasql's compatible summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from .driver import PoolStats
from .host_state import HostState


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


@attrs.frozen
class Metrics:
    """A snapshot of the manager. ``drivers`` and ``hasql`` keep hasql's shape; ``hosts`` is new."""

    drivers: Sequence[DriverMetrics]
    hasql: HasqlMetrics
    hosts: Sequence[HostMetrics]
