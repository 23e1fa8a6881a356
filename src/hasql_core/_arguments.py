"""Checks of PoolManager arguments: each failure is a ConfigurationError naming the argument, the
value given and what is accepted."""

from __future__ import annotations

import datetime

from ._topology import LagLimit
from .errors import ConfigurationError


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
