"""The chaos matrix: faults x drivers x repetitions against real local PostgreSQL clusters.

Each run builds a fresh cluster (``hasql_core.testing.cluster.LocalCluster``, a fault proxy per
node), runs application-style writer and reader loops through a ``PoolManager``, injects one fault
and checks the invariants: bounded operations, writes only on the primary, no acknowledged write
lost, reads within max_lag, writes and reads resuming in time, a clean close, no secret in logs.

Writes ``chaos-<stamp>.md`` and ``chaos-<stamp>.json`` (plus ``latest.*`` and one masked log per
run) into ``--out`` (default ``chaos-results/``), prints the matrix and the line
``chaos: N cells, M invariant violations``; exits 1 when any invariant was violated (or a run could
not be carried out).

    python chaos/run.py [--short] [--repeat N] [--driver asyncpg] [--fault crash_primary] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hasql_chaos import drivers, report
from hasql_chaos import settings as S
from hasql_chaos.cell import run_cell
from hasql_chaos.checks import INVARIANTS
from hasql_chaos.faults import FAULTS


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="runs per cell")
    parser.add_argument(
        "--driver",
        action="append",
        choices=list(drivers.KNOWN),
        help="run only this driver (repeatable; default: every installed one)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        choices=list(FAULTS),
        help="run only this row (repeatable; default: every row)",
    )
    parser.add_argument(
        "--short",
        action="store_true",
        help="shorter runs, one per cell unless --repeat says otherwise (the CI run)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the JSON here")
    parser.add_argument("--out", type=Path, default=Path("chaos-results"), metavar="DIR")
    parser.add_argument(
        "--series",
        metavar="ID",
        help="part of a series (the chaos sessions of one nox run, one per environment): write "
        "chaos-ID-LABEL.*, and chaos-ID.* / latest.* as the matrix of every part of ID so far",
    )
    parser.add_argument(
        "--label", metavar="NAME", help="this part's name within --series (its environment)"
    )
    parser.add_argument("--list", action="store_true", help="list the rows and exit")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if (args.series is None) != (args.label is None):
        parser.error("--series and --label go together")
    for value in (args.series, args.label):
        if value is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]+", value):
            parser.error(f"--series and --label are file name parts: {value!r}")
    return args


def _say(message: str, t0: float) -> None:
    print(f"[{time.monotonic() - t0:6.1f} s] {message}", flush=True)


def _verdict(run: dict[str, Any]) -> str:
    figures = run["figures"]
    text = (
        f"{figures.get('operations', 0)} ops, {figures.get('failed', 0)} failed, worst "
        f"{figures.get('worst_operation') or 0:.2f} s"
    )
    resumed = figures.get("writes_resumed_after")
    if resumed is not None:
        text += f", writes resumed after {resumed:.2f} s"
    text += f" [{figures.get('duration', 0):.0f} s]"
    if run["harness_errors"]:
        return f"VOID ({run['harness_errors'][0]}); {text}"
    if run["violated"]:
        return f"VIOLATED {', '.join(run['violated'])}; {text}"
    return f"ok; {text}"


def main(argv: list[str] | None = None) -> int:
    """Run the matrix; return the exit status (0: every invariant held)."""
    args = _parse(argv)
    if args.list:
        for name, fault in FAULTS.items():
            print(f"{name:20} {fault.title}")
        return 0
    available = drivers.installed()
    wanted: list[str] = args.driver or available
    missing = [name for name in wanted if name not in available]
    if missing or not wanted:
        print(
            f"driver(s) not installed: {', '.join(missing) or 'none at all'} (installed: "
            f"{', '.join(available) or 'none'}); the nox sessions chaos(env='main') and "
            "chaos(env='aiopg_sa') install them (aiopg_sa needs SQLAlchemy 1.4, the others 2.x)",
            file=sys.stderr,
        )
        return 2
    settings = S.Settings.short_run() if args.short else S.Settings.full()
    repeat: int = args.repeat
    faults: list[str] = args.fault or list(FAULTS)
    order = [(fault, driver) for fault in faults for driver in wanted]

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now()
    stamp: str = args.series or started.strftime("%Y%m%d-%H%M%S")
    base = f"chaos-{stamp}-{args.label}" if args.label else f"chaos-{stamp}"
    logs = out / f"logs-{stamp}"
    t0 = time.monotonic()
    _say(
        f"chaos matrix: {len(faults)} row(s) x {len(wanted)} driver(s) x {repeat} run(s), "
        f"{'short' if args.short else 'full'} runs; operation bound {S.OPERATION_BOUND:g} s",
        t0,
    )
    runs: list[dict[str, Any]] = []
    for rep in range(1, repeat + 1):
        for name, driver in order:
            _say(f"{name} x {driver} (run {rep}/{repeat})", t0)
            log_path = logs / f"{name}-{driver}-{rep}.log"
            run = run_cell(FAULTS[name], driver, settings, rep, log_path)
            runs.append(run)
            _say(f"  {_verdict(run)}", t0)
            for key in run["violated"]:
                for message in run["violations"][key] or []:
                    print(f"      {INVARIANTS[key]}: {message}", flush=True)

    meta = {
        "started": started.isoformat(timespec="seconds"),
        "mode": "short" if args.short else "full",
        "repeat": repeat,
        "drivers": wanted,
        "faults": faults,
        "settings": dataclasses.asdict(settings),
        "environment": report.environment(),
        "duration_s": time.monotonic() - t0,
        "logs": str(logs),
        "label": args.label,
    }
    results = report.assemble(meta, runs, order)
    text = report.markdown(results)
    paths = {"md": out / f"{base}.md", "json": out / f"{base}.json"}
    paths["md"].write_text(text)
    paths["json"].write_text(json.dumps(results, indent=1, default=str))
    latest = paths
    combined: dict[str, Any] | None = None
    if args.series:
        parts = sorted(out.glob(f"chaos-{args.series}-*.json"))
        combined = report.combine([json.loads(part.read_text()) for part in parts])
        latest = {"md": out / f"chaos-{args.series}.md", "json": out / f"chaos-{args.series}.json"}
        latest["md"].write_text(report.markdown(combined))
        latest["json"].write_text(json.dumps(combined, indent=1, default=str))
    for kind, path in latest.items():
        shutil.copyfile(path, out / f"latest.{kind}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths["json"], args.json)
    print()
    print(text)
    print(f"Written: {paths['md']}, {paths['json']} (logs: {logs})")
    if combined is not None and len(combined["meta"]["parts"]) > 1:
        print(
            f"Series {args.series} so far ({', '.join(combined['meta']['parts'])}): "
            f"{latest['md']} ({report.summary_line(combined)})"
        )
    print(report.summary_line(results), flush=True)
    summary = results["summary"]
    return 1 if summary["violations"] or summary["void_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
