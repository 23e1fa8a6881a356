"""``hasql watch``: every host's state live through a running PoolManager, with a log of changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from ..dsn import Dsn
from ..host_state import HostState
from ..manager import PoolManager
from ._common import (
    EXIT_OK,
    Interrupted,
    captured_logs,
    load_driver,
    parse_cli_dsn,
    run_async,
    stdout_console,
)
from ._render import hosts_table

#: How often the view is refreshed, in seconds.
TICK = 0.1


def _key(state: HostState) -> tuple[str, bool, bool, bool]:
    return (state.role.value, state.available, state.stale, state.split_brain)


def describe_change(old: HostState, new: HostState) -> str:
    """One line for a change of role or availability (and lag-limit or split-brain flags)."""

    def label(state: HostState) -> str:
        text = state.role.value
        if state.split_brain:
            text += " (split brain)"
        if state.stale:
            text += " (beyond lag limit)"
        return text

    line = f"{new.name}: {label(old)} -> {label(new)}"
    if not new.available and new.last_error:
        line += f" ({new.last_error})"
    return line


class Watcher:
    """Follows a PoolManager's host states and records every change."""

    def __init__(self, dsn: Dsn, console: Console) -> None:
        self.dsn = dsn
        self.console = console
        self.changes: deque[str] = deque(maxlen=15)
        self.previous: dict[str, HostState] = {}
        self.started = time.monotonic()

    def note(self, text: str, style: str = "yellow") -> None:
        """Record a change; print it at once when stdout is not a terminal."""
        line = f"{time.strftime('%H:%M:%S')} {text}"
        self.changes.append(line)
        if not self.console.is_terminal:
            self.console.print(line, markup=False, highlight=False)

    def observe(self, states: tuple[HostState, ...]) -> None:
        """Compare with the previous states and note what changed."""
        for state in states:
            old = self.previous.get(state.name)
            if old is not None and _key(old) != _key(state):
                self.note(describe_change(old, state))
            self.previous[state.name] = state

    def render(self, states: tuple[HostState, ...]) -> RenderableType:
        """The table and the log of changes under it."""
        title = f"hasql watch {self.dsn.redacted()}  ({time.monotonic() - self.started:.0f}s)"
        log = Text("\n".join(self.changes) or "no changes yet", style="yellow")
        return Group(hosts_table(states, title=title), Text("changes:", style="bold"), log)


async def watch(dsn: Dsn, driver: str, interval: float, duration: float | None) -> int:
    """Run a PoolManager and show its view until cancelled or ``duration`` seconds have passed."""
    console = stdout_console()
    watcher = Watcher(dsn, console)
    pm = PoolManager(
        dsn, driver=driver, refresh_delay=interval, refresh_timeout=min(2.0, max(interval, 0.5))
    )
    live: Live | None = None
    deadline = None if duration is None else time.monotonic() + duration
    try:
        with captured_logs(lambda text: None):
            # Wait (bounded) for a first probe of every host, so the first table is meaningful.
            with contextlib.suppress(asyncio.TimeoutError):
                await pm.wait_all_ready(timeout=pm.refresh_timeout + 0.5)
            states = pm.host_states()
            watcher.observe(states)
            if console.is_terminal:
                live = Live(watcher.render(states), console=console, refresh_per_second=10)
                live.start()
            else:
                console.print(hosts_table(states, title=f"hasql watch {dsn.redacted()}"))
            while deadline is None or time.monotonic() < deadline:
                await asyncio.sleep(TICK)
                states = pm.host_states()
                watcher.observe(states)
                if live is not None:
                    live.update(watcher.render(states))
    finally:
        if live is not None:
            live.stop()
        await pm.close()
    if not console.is_terminal:
        console.print(hosts_table(pm.host_states(), title="final state"))
    return EXIT_OK


def run(dsn_text: str, driver_name: str, interval: float, duration: float | None) -> int:
    """The ``watch`` command; returns the exit code (0 also after Ctrl-C)."""
    dsn = parse_cli_dsn(dsn_text)
    load_driver(driver_name)
    try:
        return run_async(lambda: watch(dsn, driver_name, interval, duration))
    except Interrupted:
        return EXIT_OK
