"""Turn a run's results into the Markdown report, the targets verdicts and the failover chart."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .common import CORE, HASQL, RAW, median

SCENARIO_TITLES = {
    "crash": "2. Failover after a crash (kill -9 of the primary, promotion 0.5 s later)",
    "frozen_primary": "3. Frozen primary (SIGSTOP, promotion 0.5 s later)",
    "frozen_replica": "4. Frozen replica (reads with a 2 s statement timeout)",
    "lagging_replica": "5. Lagging replica (replay paused on one replica, lag limit 1 s)",
}
SHORT_TITLES = {
    "crash": "crash: kill -9 primary, promote after 0.5 s",
    "frozen_primary": "frozen primary: SIGSTOP, promote after 0.5 s",
    "frozen_replica": "frozen replica: SIGSTOP, reads every 5 ms",
    "lagging_replica": "lagging replica: replay paused (failed = read beyond 1 s)",
}


class Metric:
    """One figure of a failover scenario: how to read it from a run and how to show it."""

    def __init__(
        self, key: str, label: str, kind: str, lower_is_better: bool = True, scale: float = 1.0
    ) -> None:
        self.key = key
        self.label = label
        self.kind = kind  # "s", "count", "pct"
        self.lower_is_better = lower_is_better
        self.scale = scale

    def value(self, run: dict[str, Any]) -> float | None:
        """The run's value; a missing first write counts as the whole window (never happened)."""
        value = run.get(self.key)
        if value is None and self.key == "first_write_after_promotion":
            return math.inf
        return None if value is None else float(value)

    def show(self, value: float | None, runs: list[dict[str, Any]]) -> str:
        """Format a (median) value."""
        if value is None:
            return "—"
        if math.isinf(value):
            window = min(run["window"] for run in runs) - run_promote(runs[0])
            return f"none within {window:.1f} s"
        if self.kind == "s":
            hung = self.key == "longest" and any(run.get("longest_is_hung") for run in runs)
            return f"≥ {value:.2f} s (hung)" if hung else f"{value:.3f} s"
        if self.kind == "pct":
            return f"{value * 100:.1f} %"
        return f"{value:g}"


def run_promote(run: dict[str, Any]) -> float:
    """Seconds from the fault to the promotion request (0 when nothing was promoted)."""
    return float(run["events"].get("promote", 0.0))


METRICS: dict[str, list[Metric]] = {
    "crash": [
        Metric("first_write_after_promotion", "promotion → first successful write", "s"),
        Metric("failed", "failed write attempts", "count"),
        Metric("longest", "longest write", "s"),
        Metric("failing_until", "last failed write started (after kill)", "s"),
    ],
    "frozen_primary": [
        Metric("first_write_after_promotion", "promotion → first successful write", "s"),
        Metric("failed", "failed write attempts", "count"),
        Metric("hung", "writes hung (> 3 s)", "count"),
        Metric("longest", "longest write", "s"),
        Metric("last_routed_faulty", "frozen primary stopped getting writes (after freeze)", "s"),
        Metric("last_handed_out_faulty", "its last connection handed out", "s"),
    ],
    "frozen_replica": [
        Metric("failed", "failed reads", "count"),
        Metric("hung", "reads hung (> 3 s)", "count"),
        Metric("longest", "longest read", "s"),
        Metric("last_routed_faulty", "frozen host stopped being handed out (after freeze)", "s"),
    ],
    "lagging_replica": [
        Metric("share_beyond_limit", "share of reads beyond the lag limit", "pct"),
        Metric("reads_beyond_limit", "reads beyond the limit", "count"),
        Metric("max_age_served", "oldest data served (heartbeat age)", "s"),
        Metric("failed", "failed reads", "count"),
    ],
}


def metric_of(scenario: str, key: str) -> Metric:
    """The metric ``key`` of ``scenario``."""
    return next(m for m in METRICS[scenario] if m.key == key)


def _ops(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


# -- summaries ----------------------------------------------------------------------------------------


def failover_summary(runs: list[dict[str, Any]], metric: Metric) -> float | None:
    """The median of ``metric`` over repeated runs of one client."""
    return median(metric.value(run) for run in runs)


#: Differences smaller than these are reported as ties: below what repeated runs on this kind of
#: machine tell apart. (absolute, relative) per kind of figure.
NOISE: dict[str, tuple[float, float]] = {
    "s": (0.02, 0.05),
    "count": (1.0, 0.05),
    "pct": (0.005, 0.05),
    "ratio": (0.02, 0.0),
    "cpu": (0.0, 0.10),
}


def _compare(core: float | None, other: float | None, lower_is_better: bool, kind: str) -> str:
    if core is None or other is None:
        return "n/a"
    if math.isinf(core) and math.isinf(other):
        return "tie"
    absolute, relative = NOISE[kind]
    scale = max(abs(core), abs(other)) if not math.isinf(max(core, other)) else 0.0
    if abs(core - other) <= max(absolute, relative * scale):
        return "tie"
    better = core < other if lower_is_better else core > other
    return "better" if better else "worse"


def noise_text() -> str:
    """How close two figures must be to count as a tie, in words."""
    return (
        "Ties: differences within max(20 ms, 5 %) for times, max(1, 5 %) for counts, 0.5 "
        "percentage point for shares, 0.02 for ratios to raw, 10 % for CPU."
    )


def comparisons(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every figure of hasql-core next to hasql 0.10's from the same run, with a verdict."""
    out: list[dict[str, Any]] = []

    def add(
        what: str, core: float | None, other: float | None, lower: bool, show: str, kind: str
    ) -> None:
        out.append(
            {
                "figure": what,
                "hasql-core": core,
                "hasql 0.10": other,
                "verdict": _compare(core, other, lower, kind),
                "shown": show,
            }
        )

    for driver, data in results.get("overhead", {}).items():
        cells: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
        for row in data["rows"]:
            cells.setdefault((row["tasks"], row["role"]), {})[row["client"]] = row
        for (tasks, role), by_client in cells.items():
            core, other = by_client[CORE]["ratio_to_raw"], by_client[HASQL]["ratio_to_raw"]
            add(
                f"1. {driver}, {tasks} task(s), {role}s: ratio to raw",
                core,
                other,
                False,
                f"{_ratio(core)} vs {_ratio(other)}",
                "ratio",
            )
    for scenario, by_driver in results.get("failover", {}).items():
        for driver, by_client in by_driver.items():
            core_label = next((c for c in by_client if c.startswith(CORE)), None)
            if core_label is None:
                continue
            for metric in METRICS[scenario]:
                core = failover_summary(by_client[core_label], metric)
                for label, runs in by_client.items():
                    if not label.startswith(HASQL):
                        continue
                    other = failover_summary(runs, metric)
                    add(
                        f"{SCENARIO_TITLES[scenario].split(' (')[0]}, {driver}: {metric.label}"
                        f" (vs {label})",
                        core,
                        other,
                        metric.lower_is_better,
                        f"{metric.show(core, by_client[core_label])} vs {metric.show(other, runs)}",
                        metric.kind,
                    )
    monitor = results.get("monitor", {})
    for name, data in [*monitor.get("real", {}).items(), ("fake", monitor.get("fake"))]:
        if not data:
            continue
        clients = data["clients"]
        core = clients[CORE]["cpu_us_per_host_per_s"]
        other = clients[HASQL]["cpu_us_per_host_per_s"]
        add(
            f"6. monitor CPU, {data['hosts']} hosts ({name}): µs per host per s",
            core,
            other,
            True,
            f"{core:.0f} vs {other:.0f}",
            "cpu",
        )
    ready = (monitor.get("fake") or {}).get("ready_seconds")
    if ready:
        add(
            "6. ready() over the simulated hosts: s",
            ready[CORE],
            ready[HASQL],
            True,
            f"{ready[CORE]:.2f} s vs {ready[HASQL]:.2f} s",
            "s",
        )
    for row_core in results.get("micro", []):
        if not row_core["client"].startswith(CORE):
            continue
        role = row_core["client"].split("(")[1].rstrip(")")
        row_other = next(
            r
            for r in results["micro"]
            if r["tasks"] == row_core["tasks"] and r["client"] == f"{HASQL} ({role})"
        )
        add(
            f"0. manager's own cost, {row_core['tasks']} task(s), {role}: µs added per op",
            row_core["us_added"],
            row_other["us_added"],
            True,
            f"{row_core['us_added']:.1f} vs {row_other['us_added']:.1f}",
            "cpu",
        )
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with a verdict per driver (met / missed / not measured)."""
    settings = results["meta"]["core_settings"]
    detection = settings["refresh_delay"] + settings["refresh_timeout"]
    out: list[dict[str, Any]] = []

    def verdict(ok: bool | None) -> str:
        return "not measured" if ok is None else ("met" if ok else "MISSED")

    for driver, data in results.get("overhead", {}).items():
        # Issue 8 asked for 10 % at 100 tasks; issue 18 for 5 % at 1 task and at 100 tasks.
        for tasks, limit in ((100, 0.90), (1, 0.95), (100, 0.95)):
            rows = [r for r in data["rows"] if r["client"] == CORE and r["tasks"] == tasks]
            if not rows:
                continue
            worst = min(r["ratio_to_raw"] for r in rows)
            out.append(
                {
                    "target": f"overhead within {round((1 - limit) * 100)} % of the raw pool at "
                    f"{tasks} task(s), writes and reads (ratio ≥ {limit:.2f})",
                    "driver": driver,
                    "value": ", ".join(f"{r['role']}s {r['ratio_to_raw']:.2f}" for r in rows),
                    "verdict": verdict(worst >= limit),
                }
            )
    fake = results.get("monitor", {}).get("fake")
    if fake:
        core_cpu = fake["clients"][CORE]["cpu_us_per_host_per_s"]
        hasql_cpu = fake["clients"][HASQL]["cpu_us_per_host_per_s"]
        out.append(
            {
                "target": f"monitor CPU at {fake['hosts']} hosts at or below hasql 0.10's "
                "(a tie within the CPU noise counts as at)",
                "driver": "fake",
                "value": f"{core_cpu:.0f} vs {hasql_cpu:.0f} µs per host per s",
                "verdict": verdict(_compare(core_cpu, hasql_cpu, True, "cpu") != "worse"),
            }
        )
        ready = fake.get("ready_seconds")
        if ready:
            out.append(
                {
                    "target": f"ready() over {fake['hosts']} hosts no slower than hasql 0.10's "
                    "(a tie within the time noise counts as no slower)",
                    "driver": "fake",
                    "value": f"{ready[CORE]:.2f} s vs {ready[HASQL]:.2f} s",
                    "verdict": verdict(_compare(ready[CORE], ready[HASQL], True, "s") != "worse"),
                }
            )
    failover = results.get("failover", {})
    checks: list[tuple[str, str, Metric, Callable[[float], bool], str]] = [
        (
            "crash",
            "promotion → first successful write < 0.2 s (crash, default settings)",
            metric_of("crash", "first_write_after_promotion"),
            lambda v: v < 0.2,
            "",
        ),
        (
            "frozen_primary",
            "promotion → first successful write < 0.2 s (frozen primary, default settings)",
            metric_of("frozen_primary", "first_write_after_promotion"),
            lambda v: v < 0.2,
            "",
        ),
        (
            "frozen_primary",
            f"frozen primary stops receiving writes within refresh_delay + refresh_timeout "
            f"({detection:g} s)",
            metric_of("frozen_primary", "last_routed_faulty"),
            lambda v: v <= detection,
            "",
        ),
        (
            "lagging_replica",
            "no read served by a replica beyond max_lag",
            metric_of("lagging_replica", "reads_beyond_limit"),
            lambda v: v == 0,
            "",
        ),
    ]
    for scenario, text, metric, ok, _ in checks:
        for driver, by_client in failover.get(scenario, {}).items():
            label = next((c for c in by_client if c.startswith(CORE)), None)
            if label is None:
                continue
            runs = by_client[label]
            values = [metric.value(run) for run in runs]
            value = median(values)
            shown = metric.show(value, runs)
            if metric.kind == "count" and len(runs) > 1:
                shown += f" (runs: {', '.join(f'{v:g}' for v in values if v is not None)})"
            out.append(
                {
                    "target": text,
                    "driver": driver,
                    "value": shown,
                    "verdict": verdict(None if value is None else ok(value)),
                }
            )
    verdicts = [c["verdict"] for c in comparisons(results)]
    worse, ties = verdicts.count("worse"), verdicts.count("tie")
    if worse:
        overall = "MISSED"
    elif ties:
        overall = f"not worse anywhere; {ties} tie(s)"
    else:
        overall = "met"
    out.append(
        {
            "target": "every figure better than hasql 0.10's (same run)",
            "driver": "all",
            "value": f"{verdicts.count('better')} better, {ties} tie(s) within noise, "
            f"{worse} worse (see the comparison table)",
            "verdict": overall,
        }
    )
    return out


# -- Markdown -------------------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    """The whole report."""
    meta = results["meta"]
    env = meta["environment"]
    lines = [
        f"# hasql-core benchmarks: {meta['started']} ({meta['mode']} run, "
        f"{meta['duration_s'] / 60:.1f} min)",
        "",
        f"Python {env['python']} on {env['platform']}, {env['cpus']} CPUs, load average at start "
        f"{', '.join(f'{x:.1f}' for x in env['load_average_at_start'] or [])}; "
        f"commit {env['git_commit']}{' (src or plugins modified)' if env['git_dirty'] else ''}. "
        + ", ".join(f"{k} {v}" for k, v in env["packages"].items() if v),
        "",
        "All figures come from this one run: clients interleaved in rounds, medians reported, "
        "ratios taken against the raw driver measured in the same round. The machine is shared "
        "and noisy: compare within a row, not across runs.",
        "",
        "## Targets",
        "",
    ]
    lines += _table(
        ["target", "driver", "hasql-core", "verdict"],
        ([t["target"], t["driver"], t["value"], t["verdict"]] for t in results["targets"]),
    )
    if "overhead" in results:
        lines += ["", "## 1. Overhead: acquire + `SELECT 1` + release (operations per second)", ""]
        rows = []
        for driver, data in results["overhead"].items():
            cells: dict[tuple[int, str], dict[str, dict[str, Any]]] = {}
            for row in data["rows"]:
                cells.setdefault((row["tasks"], row["role"]), {})[row["client"]] = row
            for (tasks, role), by in cells.items():
                rows.append(
                    [
                        driver,
                        str(tasks),
                        role + "s",
                        _ops(by[RAW]["ops_per_s"]),
                        f"{_ops(by[HASQL]['ops_per_s'])} ({_ratio(by[HASQL]['ratio_to_raw'])})",
                        f"{_ops(by[CORE]['ops_per_s'])} ({_ratio(by[CORE]['ratio_to_raw'])})",
                        f"{by[RAW]['cpu_us_per_op']:.0f}",
                        f"+{by[HASQL]['cpu_us_added_per_op']:.0f}",
                        f"+{by[CORE]['cpu_us_added_per_op']:.0f}",
                    ]
                )
        lines += _table(
            [
                "driver",
                "tasks",
                "role",
                "raw ops/s",
                "hasql 0.10 ops/s (ratio)",
                "hasql-core ops/s (ratio)",
                "raw CPU µs/op",
                "hasql 0.10 CPU µs/op",
                "hasql-core CPU µs/op",
            ],
            rows,
        )
        lines += [
            "",
            "Pools of 10 per host; `SELECT 1` on a real local primary / two replicas; medians "
            "over rounds, ratio = median over rounds of the client's rate / the raw pool's rate "
            "in the same round. CPU: this process's CPU time per operation (client, driver and "
            "background monitors; the servers are other processes), for the managers as the "
            "excess over the raw pool's in the same round.",
        ]
    for scenario, by_driver in results.get("failover", {}).items():
        metrics = METRICS[scenario]
        lines += ["", f"## {SCENARIO_TITLES[scenario]}", ""]
        rows = []
        for driver, by_client in by_driver.items():
            for label, runs in by_client.items():
                rows.append(
                    [driver, label, str(len(runs))]
                    + [m.show(failover_summary(runs, m), runs) for m in metrics]
                )
        lines += _table(["driver", "client", "runs"] + [m.label for m in metrics], rows)
    monitor = results.get("monitor")
    if monitor:
        lines += ["", "## 6. Monitor cost: CPU per host per second at refresh_delay 1 s", ""]
        rows = []
        for name, data in [*monitor.get("real", {}).items(), ("fake driver", monitor.get("fake"))]:
            if not data:
                continue
            hasql = data["clients"][HASQL]["cpu_us_per_host_per_s"]
            core = data["clients"][CORE]["cpu_us_per_host_per_s"]
            rows.append(
                [
                    f"{data['hosts']} ({name})",
                    f"{hasql:.0f} µs",
                    f"{core:.0f} µs",
                    f"{core / hasql:.2f}" if hasql > 0 else "—",
                    f"{data['clients'][CORE]['cpu_share_of_a_core'] * 100:.2f} %",
                ]
            )
        lines += _table(
            ["hosts", "hasql 0.10", "hasql-core", "core / hasql", "hasql-core, share of a core"],
            rows,
        )
        fake = monitor.get("fake")
        if fake and fake.get("ready_seconds"):
            ready = fake["ready_seconds"]
            lines += [
                "",
                f"`ready()` over {fake['hosts']} simulated hosts took "
                f"{ready[HASQL]:.2f} s (hasql 0.10) and {ready[CORE]:.2f} s (hasql-core).",
            ]
    if results.get("micro"):
        lines += [
            "",
            "## Manager's own cost per acquire + release (fake driver, no network)",
            "",
        ]
        lines += _table(
            ["tasks", "client", "ops/s", "µs added per op"],
            (
                [
                    str(r["tasks"]),
                    r["client"],
                    _ops(r["ops_per_s"]),
                    "—" if r["us_added"] is None else f"{r['us_added']:.1f}",
                ]
                for r in results["micro"]
            ),
        )
    lines += ["", "## hasql-core against hasql 0.10, figure by figure", "", noise_text(), ""]
    lines += _table(
        ["figure", "hasql-core vs hasql 0.10", "verdict"],
        ([c["figure"], c["shown"], c["verdict"]] for c in results["comparisons"]),
    )
    lines += ["", "## Settings", ""]
    for line in meta["settings_text"]:
        lines.append(f"- {line}")
    lines.append("")
    return "\n".join(lines)


# -- chart ------------------------------------------------------------------------------------------------


def chart(results: dict[str, Any], path: Path) -> bool:
    """Successful and failed operations over time per client, one panel per scenario and driver.

    Successes are drawn above the axis, failures (and, for the lagging replica, reads beyond the
    lag limit) below it, per 100 ms, from the first run of each client. Returns False when there
    is nothing to draw.
    """
    failover = results.get("failover", {})
    if not failover:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(failover)
    drivers = sorted({d for by_driver in failover.values() for d in by_driver})
    fig, axes = plt.subplots(
        len(scenarios),
        len(drivers),
        figsize=(7.5 * len(drivers), 3.2 * len(scenarios)),
        squeeze=False,
        sharex=False,
    )
    colors = {HASQL: "tab:orange", CORE: "tab:blue"}
    variant_colors = ["tab:red", "tab:green", "tab:purple"]
    for row, scenario in enumerate(scenarios):
        for col, driver in enumerate(drivers):
            ax = axes[row][col]
            by_client = failover[scenario].get(driver, {})
            extra = 0
            for label, runs in by_client.items():
                if not runs:
                    continue
                color = colors.get(label)
                if color is None:
                    color = variant_colors[extra % len(variant_colors)]
                    extra += 1
                line = runs[0]["timeline"]
                ax.step(line["t"], line["ok"], where="post", color=color, lw=1.2, label=label)
                ax.fill_between(
                    line["t"],
                    [-f for f in line["failed"]],
                    step="post",
                    color=color,
                    alpha=0.35,
                )
                for name, at in runs[0]["events"].items():
                    if name in ("fault", "promote"):
                        ax.axvline(at, color="grey", ls="--" if name == "fault" else ":", lw=1)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(f"{SHORT_TITLES[scenario]} ({driver})", fontsize=9)
            ax.set_xlabel("seconds since the fault (dashed: fault, dotted: promotion)", fontsize=8)
            ax.set_ylabel("ops/s: ok above, failed below", fontsize=8)
            ax.tick_params(labelsize=8)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
