"""Linux process helpers read from ``/proc``: liveness, identity, descendants and signals.

Processes are always addressed by pid, never by name, so that servers this library did not start are
never touched.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of ``/proc/<pid>/stat`` after the command name, or None when gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name sits in parentheses and may itself contain spaces or parentheses.
    return raw[raw.rfind(")") + 2 :].split()


def process_state(pid: int) -> str | None:
    """Return the one-letter scheduler state of ``pid`` (``R``, ``S``, ``T``, ``Z``...) or None."""
    fields = _stat_fields(pid)
    return fields[0] if fields else None


def process_start_time(pid: int) -> int | None:
    """Return the start time of ``pid`` in clock ticks since boot, or None when it does not exist.

    Together with the pid it identifies a process even after its pid has been reused.
    """
    fields = _stat_fields(pid)
    # Field 22 of stat; fields[0] is field 3.
    return int(fields[19]) if fields else None


def pid_alive(pid: int) -> bool:
    """Return True when ``pid`` exists and is not a zombie."""
    state = process_state(pid)
    return state is not None and state not in ("Z", "X")


def process_cwd(pid: int) -> str | None:
    """Return the working directory of ``pid``, or None when unreadable or gone."""
    try:
        return os.readlink(_PROC / str(pid) / "cwd")
    except OSError:
        return None


def process_cmdline(pid: int) -> list[str]:
    """Return the argument vector of ``pid`` (empty when unreadable or gone)."""
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _children_map() -> dict[int, list[int]]:
    """Map every parent pid to its child pids, from one scan of ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(_PROC):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """Return every live descendant of ``pid``, parents before their children.

    The parent must be stopped or otherwise kept from forking for the answer to be complete.
    """
    children = _children_map()
    found: list[int] = []
    queue = list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def send_signal(pid: int, sig: signal.Signals) -> bool:
    """Send ``sig`` to ``pid``; return False when the process no longer exists."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_until_stopped(pid: int, timeout: float) -> bool:
    """Poll until ``pid`` is in the stopped (``T``) state; False on timeout or when it is gone."""
    deadline = time.monotonic() + timeout
    while True:
        state = process_state(pid)
        if state is None or state in ("Z", "X"):
            return False
        if state in ("T", "t"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.001)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Poll until none of ``pids`` is alive or ``timeout`` passes; return those still alive."""
    remaining = list(pids)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        remaining = [pid for pid in remaining if pid_alive(pid)]
        if not remaining or time.monotonic() >= deadline:
            return remaining
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
