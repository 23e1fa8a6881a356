"""The invariants, evaluated over the records of one run.

Each invariant yields a list of violation messages (empty: it held) or None when it does not apply
to the row. :func:`evaluate` also returns the figures the matrix shows.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
from typing import Any

from . import settings as S
from .faults import Fault, Scenario
from .workload import STUCK, Op

#: Invariant keys in report order, with their column titles.
INVARIANTS: dict[str, str] = {
    "healthy_before": "all ok before the fault",
    "bounded": "ops within bounds",
    "writes_on_primary": "writes only on the primary",
    "no_lost_writes": "no acknowledged write lost",
    "max_lag": "reads within max_lag",
    "writes_resume": f"writes resume <= {S.WRITE_RESUME_BOUND:g} s",
    "reads_resume": f"reads resume <= {S.READ_RESUME_BOUND:g} s",
    "clean_close": "clean close",
    "no_secrets": "no secret in logs",
}


@dataclasses.dataclass
class RunData:
    """Everything one run recorded, for the checks."""

    fault: Fault
    driver: str
    run: int
    ops: list[Op] = dataclasses.field(default_factory=list)
    overruns: list[Op] = dataclasses.field(default_factory=list)
    unstoppable: list[str] = dataclasses.field(default_factory=list)
    scenario: Scenario | None = None
    harness_errors: list[str] = dataclasses.field(default_factory=list)
    cell_timed_out: bool = False
    close_duration: float | None = None
    close_error: str | None = None
    backends_during_load: dict[str, int] = dataclasses.field(default_factory=dict)
    app_backends: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    leftover_tasks: list[str] = dataclasses.field(default_factory=list)
    leftover_processes: list[str] = dataclasses.field(default_factory=list)
    processes_seen: int = 0
    final_primary: str | None = None
    rows_on_final_primary: set[int] | None = None
    commit_times: list[float] | None = None
    secret_hits: int = 0
    secret_examples: list[str] = dataclasses.field(default_factory=list)
    log_records: int = 0
    duration: float = 0.0


def _rel(data: RunData, at: float | None) -> float | None:
    """``at`` (monotonic) relative to the fault, rounded for the report."""
    scenario = data.scenario
    if at is None or scenario is None or scenario.fault_at is None:
        return None
    return round(at - scenario.fault_at, 3)


def _op_text(data: RunData, op: Op) -> str:
    phases = ", ".join(
        f"{name} {'-' if value is None else f'{value:.2f} s'}"
        for name, value in op.phases().items()
    )
    where = op.server_host or op.host or "no host"
    started = _rel(data, op.start)
    at = "" if started is None else f" started at {started:+.2f} s"
    return f"{op.kind} on {where}{at}: {op.duration():.2f} s ({phases}), {op.outcome}"


def _exceeded_phases(op: Op) -> list[str]:
    """Which phases outlived their own bound (plus the margin)."""
    limits = {
        "acquire": S.ACQUIRE_TIMEOUT,
        "statement": S.STATEMENT_BOUND,
        "release": S.RELEASE_BOUND,
    }
    found = []
    for name, value in op.phases().items():
        if value is not None and value > limits[name] + S.SCHEDULING_MARGIN:
            found.append(name)
    if op.outcome == STUCK and not found:
        # Still inside a phase when cancelled: the phase not finished is the one that hung.
        phases = op.phases()
        if phases["acquire"] is None or op.acquired is None:
            found.append("acquire")
        elif phases["statement"] is None:
            found.append("statement")
        else:
            found.append("release")
    return found


def check_healthy_before(data: RunData) -> list[str]:
    """Before the fault the cluster is healthy: every operation that ended then succeeded, and
    writes and reads both did (otherwise nothing after the fault means anything)."""
    scenario = data.scenario
    if scenario is None or scenario.fault_at is None:
        return []
    fault_at = scenario.fault_at
    before = [op for op in data.ops if op.end is not None and op.end < fault_at]
    failed = [op for op in before if not op.ok]
    problems: list[str] = []
    if failed:
        kinds = collections.Counter(op.outcome for op in failed)
        problems.append(
            f"{len(failed)} of {len(before)} operation(s) failed before the fault ("
            + ", ".join(f"{name} {count}" for name, count in kinds.most_common())
            + f"); first: {failed[0].error}"
        )
    for kind in ("write", "read"):
        if not any(op.ok and op.kind == kind for op in before):
            problems.append(f"no {kind} succeeded before the fault")
    return problems


def check_bounded(data: RunData) -> list[str]:
    """No operation longer than acquire + statement + release bounds + margin; none stuck."""
    problems: list[str] = []
    over = [op for op in data.ops if op.outcome == STUCK or op.duration() > S.OPERATION_BOUND]
    if over:
        worst = max(over, key=lambda op: op.duration())
        by_phase = collections.Counter(p for op in over for p in _exceeded_phases(op))
        phases = ", ".join(f"{name} {count}" for name, count in by_phase.most_common())
        stuck = sum(1 for op in over if op.outcome == STUCK)
        problems.append(
            f"{len(over)} operation(s) exceeded {S.OPERATION_BOUND:g} s ({stuck} still stuck at the "
            f"end and cancelled; phase over its bound: {phases or 'none alone'}); worst: "
            + _op_text(data, worst)
        )
    if data.unstoppable:
        problems.append(
            f"worker(s) {', '.join(data.unstoppable)} did not end within 2 s of being cancelled"
        )
    if data.cell_timed_out:
        problems.append("the run did not finish within its watchdog limit and was cancelled")
    return problems


def check_writes_on_primary(data: RunData) -> list[str]:
    """No write acknowledged by a node that was not the primary when it executed the write."""
    scenario = data.scenario
    if scenario is None:
        return []
    wrong = [
        op
        for op in data.ops
        if op.kind == "write"
        and op.ok
        and op.server_ts is not None
        and op.server_host != scenario.primary_at(op.server_ts)
    ]
    if not wrong:
        return []
    first = wrong[0]
    assert first.server_ts is not None
    return [
        f"{len(wrong)} write(s) acknowledged by a node that was not the primary; first: id "
        f"{first.ident} by {first.server_host} at {_rel(data, first.end)} s after the fault, "
        f"when {scenario.primary_at(first.server_ts)} was the primary"
    ]


def _acknowledged(data: RunData) -> list[Op]:
    """Writes acknowledged by the primary of their time (the others are another invariant's)."""
    scenario = data.scenario
    if scenario is None:
        return []
    return [
        op
        for op in data.ops
        if op.kind == "write"
        and op.ok
        and op.ident is not None
        and op.server_ts is not None
        and op.server_host == scenario.primary_at(op.server_ts)
    ]


def check_lost_writes(data: RunData) -> tuple[list[str], dict[str, Any]]:
    """Every acknowledged write is on the final primary (with an asynchronous standby promoted:
    every write acknowledged after the promotion)."""
    figures: dict[str, Any] = {}
    rows = data.rows_on_final_primary
    scenario = data.scenario
    if rows is None or scenario is None:
        return [], figures  # the cell recorded a harness error: nothing to judge
    acked = _acknowledged(data)
    must = acked
    if not data.fault.synchronous and scenario.promoted_at is not None:
        promoted = scenario.promoted_at
        must = [op for op in acked if op.server_ts is not None and op.server_ts >= promoted]
        checked = {op.ident for op in must}
        before = [op for op in acked if op.ident not in checked and op.ident not in rows]
        figures["lost_before_promotion_async"] = len(before)
    missing = [op for op in must if op.ident not in rows]
    figures["acknowledged_writes"] = len(acked)
    figures["checked_writes"] = len(must)
    figures["lost_writes"] = len(missing)
    if not missing:
        return [], figures
    ids = ", ".join(str(op.ident) for op in missing[:5])
    return [
        f"{len(missing)} of {len(must)} acknowledged write(s) missing on the final primary "
        f"{data.final_primary} (ids {ids}{', ...' if len(missing) > 5 else ''})"
    ], figures


def check_max_lag(data: RunData, limit: float) -> tuple[list[str], dict[str, Any]]:
    """No read served by a replica that was more than ``limit`` s behind when handed out.

    A replica is behind since the commit of the first transaction it has not replayed: the reader
    returns the commit time of the last transaction the replica replayed, and the commit times of
    every row on the primary (``track_commit_timestamp``) give the next one. The time between the
    acquire and the end of the statement is subtracted: the replica was handed out before it ran
    the statement.
    """
    commits = data.commit_times
    if commits is None:
        return [], {}  # the cell recorded a harness error: nothing to judge
    worst = 0.0
    beyond: list[tuple[float, Op]] = []
    for op in data.ops:
        if op.kind != "read" or not op.ok or not op.in_recovery or op.server_clock is None:
            continue
        replayed = op.server_ts if op.server_ts is not None else float("-inf")
        index = bisect.bisect_right(commits, replayed)
        if index >= len(commits):
            continue
        behind_since = commits[index]
        assert op.acquired is not None and op.statement_end is not None
        lag = op.server_clock - behind_since - (op.statement_end - op.acquired)
        worst = max(worst, lag)
        if lag > limit:
            beyond.append((lag, op))
    figures = {"max_lag_served": round(worst, 3), "reads_beyond_max_lag": len(beyond)}
    if not beyond:
        return [], figures
    lag, op = max(beyond, key=lambda item: item[0])
    return [
        f"{len(beyond)} read(s) served beyond max_lag={limit:g} s; worst {lag:.2f} s behind, by "
        f"{op.server_host} at {_rel(data, op.end)} s after the fault"
    ], figures


def _resumed(data: RunData, kind: str) -> tuple[list[str], dict[str, float | None]]:
    scenario = data.scenario
    if scenario is None:
        return [], {}
    problems: list[str] = []
    delays: dict[str, float | None] = {}
    for want in scenario.expectations:
        if want.kind != kind:
            continue
        ends = [
            op.end
            for op in data.ops
            if op.kind == kind
            and op.ok
            and op.server_host == want.node
            and op.end is not None
            and op.end >= want.at
        ]
        delay = min(ends) - want.at if ends else None
        delays[want.node] = None if delay is None else round(delay, 3)
        if delay is None or delay > want.bound:
            seen = "none seen" if delay is None else f"first after {delay:.2f} s"
            problems.append(
                f"{kind}s did not resume on {want.node} within {want.bound:g} s of the "
                f"{want.reason} ({seen})"
            )
    return problems, delays


def check_clean_close(data: RunData) -> list[str]:
    """close() returned in time; no connection, task or server process left behind."""
    problems: list[str] = []
    if data.close_error is not None:
        problems.append(f"close(): {data.close_error}")
    for node, backends in sorted(data.app_backends.items()):
        problems.append(
            f"{len(backends)} connection(s) of the application still in pg_stat_activity on "
            f"{node} {S.BACKEND_EXIT_WAIT:g} s after close(): {'; '.join(backends[:3])}"
        )
    if data.leftover_tasks:
        problems.append(
            f"{len(data.leftover_tasks)} asyncio task(s) left after close(): "
            + "; ".join(data.leftover_tasks[:3])
        )
    if data.leftover_processes:
        problems.append(
            f"{len(data.leftover_processes)} server process(es) left after the teardown: "
            + "; ".join(data.leftover_processes[:3])
        )
    return problems


def check_secrets(data: RunData) -> list[str]:
    """The password appears in no log record, error message or manager description."""
    if not data.secret_hits:
        return []
    return [
        f"the password appears in {data.secret_hits} log record(s) or error message(s): "
        + " | ".join(data.secret_examples)
    ]


def evaluate(data: RunData) -> dict[str, Any]:
    """Every invariant of one run (None: not applicable) and its figures, as JSON-ready data."""
    violations: dict[str, list[str] | None] = {}
    figures: dict[str, Any] = {}
    violations["healthy_before"] = check_healthy_before(data)
    violations["bounded"] = check_bounded(data)
    violations["writes_on_primary"] = check_writes_on_primary(data)
    violations["no_lost_writes"], lost = check_lost_writes(data)
    figures.update(lost)
    if data.fault.max_lag is not None:
        violations["max_lag"], lag = check_max_lag(data, data.fault.max_lag)
        figures.update(lag)
    else:
        violations["max_lag"] = None
    wants = data.scenario.expectations if data.scenario is not None else []
    write_problems, write_delays = _resumed(data, "write")
    read_problems, read_delays = _resumed(data, "read")
    violations["writes_resume"] = write_problems if any(w.kind == "write" for w in wants) else None
    violations["reads_resume"] = read_problems if any(w.kind == "read" for w in wants) else None
    violations["clean_close"] = check_clean_close(data)
    violations["no_secrets"] = check_secrets(data)
    if data.harness_errors:
        # The run is void: say so instead of blaming the library for what did not happen.
        violations["writes_resume"] = None if violations["writes_resume"] is None else []
        violations["reads_resume"] = None if violations["reads_resume"] is None else []

    ops = [op for op in data.ops if op.end is not None]
    failed = [op for op in ops if not op.ok]
    errors = collections.Counter(op.outcome for op in failed)
    worst = max(ops, key=lambda op: op.duration(), default=None)
    known_resume = [d for d in write_delays.values() if d is not None]
    figures.update(
        {
            "operations": len(ops),
            "writes": sum(1 for op in ops if op.kind == "write"),
            "reads": sum(1 for op in ops if op.kind == "read"),
            "failed": len(failed),
            "errors": dict(errors.most_common()),
            "worst_operation": None if worst is None else round(worst.duration(), 3),
            "worst_operation_detail": None if worst is None else _op_text(data, worst),
            "writes_resumed_after": (
                None
                if not write_delays
                else (max(known_resume) if len(known_resume) == len(write_delays) else None)
            ),
            "writes_resumed_after_by_node": write_delays,
            "reads_resumed_after_by_node": read_delays,
            "close_duration": None
            if data.close_duration is None
            else round(data.close_duration, 3),
            "backends_during_load": data.backends_during_load,
            "log_records": data.log_records,
            "server_processes_seen": data.processes_seen,
            "duration": round(data.duration, 1),
        }
    )
    scenario = data.scenario
    events = []
    if scenario is not None:
        for event in scenario.events:
            events.append(
                {
                    "step": event.label,
                    "at": _rel(data, event.start),
                    "took": round(event.end - event.start, 3),
                    **({"error": event.error} if event.error else {}),
                }
            )
    failed_examples = [
        {"at": _rel(data, op.start), "detail": _op_text(data, op), "error": op.error}
        for op in failed[:5]
    ]
    return {
        "fault": data.fault.name,
        "driver": data.driver,
        "run": data.run,
        "violations": violations,
        "violated": sorted(k for k, v in violations.items() if v),
        "harness_errors": data.harness_errors,
        "figures": figures,
        "events": events,
        "failed_examples": failed_examples,
        "final_primary": data.final_primary,
    }
