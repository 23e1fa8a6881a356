"""hasql 0.10's replica lag configuration, accepted and translated to this library's lag limits.

``PoolManager(..., staleness=StalenessPolicy(TimeStalenessChecker(max_lag=timedelta(seconds=1))))``
means exactly ``PoolManager(..., max_lag=1.0, stale_fallback=True)``, and ``BytesStalenessChecker``
means ``max_lag_bytes``. hasql 0.10 ran extra queries per check to measure lag; here the monitor's
probe already measures it against the primary's newest WAL position, so the checkers only carry
their limits. What has no counterpart (``grace_period``, custom checkers) is refused with an error
that says what to use instead.
"""

from __future__ import annotations

import datetime

from .errors import ConfigurationError

__all__ = [
    "BaseStalenessChecker",
    "BytesStalenessChecker",
    "StalenessPolicy",
    "TimeStalenessChecker",
    "lag_arguments",
]


class BaseStalenessChecker:
    """Base of hasql's staleness checkers. Custom subclasses are not supported (see module doc)."""


class TimeStalenessChecker(BaseStalenessChecker):
    """A replica whose replay is more than ``max_lag`` behind the primary is stale.

    ``max_master_lsn_age`` is accepted for compatibility and has no effect: the primary's position
    used here is always the one of its latest probe.
    """

    def __init__(
        self,
        max_lag: datetime.timedelta,
        max_master_lsn_age: datetime.timedelta = datetime.timedelta(seconds=2),
    ) -> None:
        if not isinstance(max_lag, datetime.timedelta):
            raise ConfigurationError(
                f"TimeStalenessChecker(max_lag=...) takes a datetime.timedelta, got {max_lag!r}"
            )
        self.max_lag = max_lag
        self.max_master_lsn_age = max_master_lsn_age


class BytesStalenessChecker(BaseStalenessChecker):
    """A replica more than ``max_lag_bytes`` of WAL behind the primary is stale.

    ``max_master_lsn_age`` is accepted for compatibility and has no effect.
    """

    def __init__(
        self,
        max_lag_bytes: int,
        max_master_lsn_age: datetime.timedelta = datetime.timedelta(seconds=2),
    ) -> None:
        if not isinstance(max_lag_bytes, int) or isinstance(max_lag_bytes, bool):
            raise ConfigurationError(
                "BytesStalenessChecker(max_lag_bytes=...) takes an integer number of bytes, "
                f"got {max_lag_bytes!r}"
            )
        self.max_lag_bytes = max_lag_bytes
        self.max_master_lsn_age = max_master_lsn_age


class StalenessPolicy:
    """hasql 0.10's staleness setting: one checker, and an optional ``grace_period``."""

    def __init__(
        self, checker: BaseStalenessChecker, grace_period: datetime.timedelta | None = None
    ) -> None:
        self.checker = checker
        self.grace_period = grace_period


def lag_arguments(staleness: object) -> tuple[datetime.timedelta | None, int | None]:
    """``(max_lag, max_lag_bytes)`` equivalent to hasql's ``staleness`` setting, or a
    :class:`~hasql_core.errors.ConfigurationError` naming what to write instead."""
    if not isinstance(staleness, StalenessPolicy):
        raise ConfigurationError(
            f"staleness must be a StalenessPolicy (from hasql_core.staleness), got "
            f"{type(staleness).__name__}; or use max_lag= / max_lag_bytes= directly"
        )
    checker = staleness.checker
    if staleness.grace_period is not None:
        raise ConfigurationError(
            "StalenessPolicy(grace_period=...) has no counterpart here: a replica is fresh exactly "
            "while its lag is within the limit, measured on every probe. Drop grace_period, or "
            "raise the limit itself (max_lag=...) if brief spikes should not count."
        )
    if type(checker) is TimeStalenessChecker:
        return checker.max_lag, None
    if type(checker) is BytesStalenessChecker:
        return None, checker.max_lag_bytes
    raise ConfigurationError(
        f"custom staleness checker {type(checker).__name__} is not supported: the monitor "
        "measures every replica's lag itself (time and bytes, against the primary's newest WAL "
        "position). Use max_lag=<seconds or timedelta> and/or max_lag_bytes=<int>, with "
        "stale_fallback=True for hasql 0.10's fallback to stale replicas."
    )
