"""Tables of host states, shared by ``status``, ``watch`` and ``demo``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from rich.table import Table
from rich.text import Text

from ..host_state import HostState, Role

_ROLE_STYLE = {
    Role.PRIMARY: "bold green",
    Role.STANDBY: "cyan",
    Role.UNAVAILABLE: "bold red",
    Role.UNKNOWN: "dim",
}


def state_to_json(state: HostState) -> dict[str, Any]:
    """One host as a JSON-ready dict (no secrets: ``last_error`` is already redacted)."""
    return {
        "host": state.host,
        "port": state.port,
        "name": state.name,
        "role": state.role.value,
        "available": state.available,
        "read_only": state.read_only,
        "split_brain": state.split_brain,
        "stale": state.stale,
        "wal_lsn": state.wal_lsn,
        "receive_lsn": state.receive_lsn,
        "lag_bytes": state.lag_bytes,
        "lag_seconds": state.lag_seconds,
        "timeline": state.timeline,
        "rtt_ms": None if state.rtt is None else round(state.rtt * 1000, 3),
        "last_error": state.last_error,
    }


def role_text(state: HostState) -> Text:
    """The role, coloured, with the split-brain and beyond-lag-limit flags."""
    label = state.role.value
    if state.split_brain:
        label += " (split brain)"
    if state.stale:
        label += " (beyond lag limit)"
    style = _ROLE_STYLE[state.role]
    if state.split_brain or state.stale:
        style = "bold yellow"
    return Text(label, style=style)


def _opt(value: object, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def hosts_table(
    states: Sequence[HostState],
    title: str | None = None,
    label: Callable[[HostState], str] | None = None,
) -> Table:
    """A table with one row per host: role, availability, lag, timeline, probe time, last error.

    ``label`` names each host in the first column (default: its host name).
    """
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("host" if label is None else "node")
    table.add_column("port", justify="right")
    table.add_column("role")
    table.add_column("available")
    table.add_column("read-only")
    table.add_column("lag bytes", justify="right")
    table.add_column("lag s", justify="right")
    table.add_column("timeline", justify="right")
    table.add_column("rtt ms", justify="right")
    table.add_column("last error", overflow="fold", max_width=60)
    for state in states:
        table.add_row(
            state.host if label is None else label(state),
            str(state.port),
            role_text(state),
            Text("yes", style="green") if state.available else Text("no", style="red"),
            "yes" if state.read_only else "no",
            _opt(state.lag_bytes),
            _opt(state.lag_seconds, "{:.3f}"),
            _opt(state.timeline),
            _opt(None if state.rtt is None else state.rtt * 1000, "{:.1f}"),
            "" if state.available or state.last_error is None else state.last_error,
        )
    return table
