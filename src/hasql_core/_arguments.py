"""Checks of PoolManager arguments: each failure is a ConfigurationError naming the argument, the
value given and what is accepted. :func:`manager_options` checks the constructor's,
:class:`AcquireRequests` those of ``acquire()``."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs

from ._acquire import AcquireRequest
from ._monitor import MonitorSettings
from ._topology import LagLimit
from .errors import ConfigurationError
from .staleness import StalenessPolicy, lag_arguments

DEFAULT_ACQUIRE_TIMEOUT = 1.0
DEFAULT_REFRESH_DELAY = 1.0
#: A probe is one trivial query: a healthy host answers in well under 100 ms, even busy. Two seconds
#: leaves room for a slow connect (TLS, a loaded server) without flapping, and finds a hung host within
#: ``refresh_delay + refresh_timeout`` = 3 s by default, where hasql needed 30 s.
DEFAULT_REFRESH_TIMEOUT = 2.0
#: Probe interval while an acquire waits for a role no host has (e.g. during a failover).
DEFAULT_FAST_REFRESH_DELAY = 0.05
DEFAULT_CLOSE_TIMEOUT = 10.0
DEFAULT_STOPWATCH_WINDOW_SIZE = 128
DEFAULT_MASTER_AS_REPLICA_WEIGHT = 0.0


def seconds(value: float | datetime.timedelta | None, name: str) -> float | None:
    """``value`` (seconds or a timedelta, or None) as float seconds; must not be negative."""
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigurationError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def lag_limit(max_lag: float | datetime.timedelta | None, max_lag_bytes: int | None) -> LagLimit:
    """A :class:`LagLimit` from ``max_lag`` (seconds or timedelta) and ``max_lag_bytes``."""
    if max_lag_bytes is not None and (
        isinstance(max_lag_bytes, bool) or not isinstance(max_lag_bytes, int) or max_lag_bytes < 0
    ):
        raise ConfigurationError(
            f"max_lag_bytes must be a non-negative integer, got {max_lag_bytes!r}"
        )
    return LagLimit(seconds=seconds(max_lag, "max_lag"), bytes=max_lag_bytes)


def positive(value: float, name: str) -> float:
    """``value`` as float seconds; must be a number above 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    return float(value)


def check_weight(weight: float | None) -> None:
    """Refuse a ``master_as_replica_weight`` outside [0, 1] (None means the default)."""
    if weight is not None and (
        isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0
    ):
        raise ConfigurationError(
            f"master_as_replica_weight must be within [0, 1], got {weight!r}: 0 never uses the "
            "primary for reads, 1 always makes it a candidate"
        )


@attrs.frozen
class ManagerOptions:
    """A PoolManager's settings, checked, with the defaults that depend on other arguments
    filled in (see :func:`manager_options`)."""

    acquire_timeout: float
    close_timeout: float
    release_timeout: float
    fallback_master: bool
    master_as_replica_weight: float
    stale_fallback: bool
    lag_limit: LagLimit
    stopwatch_window_size: int
    #: A private read-only copy: the caller's dict is never modified, by us or by a driver.
    pool_factory_kwargs: Mapping[str, Any]
    monitor: MonitorSettings


def manager_options(
    *,
    acquire_timeout: float,
    refresh_delay: float,
    refresh_timeout: float,
    close_timeout: float,
    release_timeout: float | None,
    fast_refresh_delay: float,
    fallback_master: bool,
    master_as_replica_weight: float,
    stopwatch_window_size: int,
    pool_factory_kwargs: Mapping[str, Any] | None,
    max_lag: float | datetime.timedelta | None,
    max_lag_bytes: int | None,
    stale_fallback: bool,
    staleness: StalenessPolicy | None,
) -> ManagerOptions:
    """The settings PoolManager's keyword arguments of the same names give (a ConfigurationError
    for the first wrong one): ``release_timeout`` defaults to ``refresh_timeout``,
    ``fast_refresh_delay`` is at most ``refresh_delay``, and ``staleness`` (hasql 0.10) becomes
    the lag limit with ``stale_fallback``."""
    acquire_timeout = positive(acquire_timeout, "acquire_timeout")
    refresh_delay = positive(refresh_delay, "refresh_delay")
    refresh_timeout = positive(refresh_timeout, "refresh_timeout")
    close_timeout = positive(close_timeout, "close_timeout")
    if release_timeout is not None:
        release_timeout = positive(release_timeout, "release_timeout")
    check_weight(master_as_replica_weight)
    if not isinstance(stopwatch_window_size, int) or stopwatch_window_size < 1:
        raise ConfigurationError(
            f"stopwatch_window_size must be a positive integer, got {stopwatch_window_size!r}"
        )
    if pool_factory_kwargs is not None and not isinstance(pool_factory_kwargs, Mapping):
        raise ConfigurationError(
            f"pool_factory_kwargs must be a mapping, got {type(pool_factory_kwargs).__name__}"
        )
    if staleness is not None:
        if max_lag is not None or max_lag_bytes is not None:
            raise ConfigurationError(
                "staleness= (hasql 0.10) and max_lag/max_lag_bytes say the same thing; pass one"
            )
        max_lag, max_lag_bytes = lag_arguments(staleness)
        stale_fallback = True
    return ManagerOptions(
        acquire_timeout=acquire_timeout,
        close_timeout=close_timeout,
        release_timeout=refresh_timeout if release_timeout is None else release_timeout,
        fallback_master=bool(fallback_master),
        master_as_replica_weight=float(master_as_replica_weight),
        stale_fallback=bool(stale_fallback),
        lag_limit=lag_limit(max_lag, max_lag_bytes),
        stopwatch_window_size=stopwatch_window_size,
        pool_factory_kwargs=MappingProxyType(dict(pool_factory_kwargs or {})),
        monitor=MonitorSettings(
            refresh_delay=refresh_delay,
            refresh_timeout=refresh_timeout,
            fast_delay=min(positive(fast_refresh_delay, "fast_refresh_delay"), refresh_delay),
        ),
    )


class AcquireRequests:
    """The requests of one manager's ``acquire()`` calls: the two plain ones made once, any other
    checked and built from the call's arguments over the manager's settings."""

    __slots__ = ("_options", "plain")

    def __init__(self, options: ManagerOptions) -> None:
        self._options = options
        #: ``read_only`` -> the request of ``acquire(read_only)`` without further arguments.
        self.plain = {
            read_only: AcquireRequest(
                read_only=read_only,
                fallback_master=options.fallback_master,
                weight=options.master_as_replica_weight,
                lag_limit=None,
                timeout=options.acquire_timeout,
                kwargs={},
                stale_fallback=options.stale_fallback and read_only,
            )
            for read_only in (False, True)
        }

    def build(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag: float | datetime.timedelta | None = None,
        max_lag_bytes: int | None = None,
        **kwargs: Any,
    ) -> AcquireRequest:
        """The request ``PoolManager.acquire()`` with these arguments makes (checked)."""
        if (
            fallback_master is None
            and master_as_replica_weight is None
            and timeout is None
            and max_lag is None
            and max_lag_bytes is None
            and not kwargs
        ):
            return self.plain[bool(read_only)]
        if not read_only:
            if master_as_replica_weight is not None:
                raise ConfigurationError(
                    "master_as_replica_weight applies to reads only; pass read_only=True or drop it"
                )
            if max_lag is not None or max_lag_bytes is not None:
                raise ConfigurationError("max_lag and max_lag_bytes apply to reads only")
        check_weight(master_as_replica_weight)
        limit = None
        if max_lag is not None or max_lag_bytes is not None:
            limit = lag_limit(max_lag, max_lag_bytes)
        options = self._options
        return AcquireRequest(
            read_only=read_only,
            fallback_master=options.fallback_master if fallback_master is None else fallback_master,
            weight=(
                options.master_as_replica_weight
                if master_as_replica_weight is None
                else master_as_replica_weight
            ),
            lag_limit=limit,
            timeout=options.acquire_timeout if timeout is None else positive(timeout, "timeout"),
            kwargs=kwargs,
            stale_fallback=options.stale_fallback and bool(read_only),
        )
