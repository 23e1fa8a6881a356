"""The cluster's server processes, read from /proc, to prove none outlives the teardown.

A process is identified by its pid and its start time (field 22 of ``/proc/PID/stat``), so a pid
reused by an unrelated process later is not mistaken for a leftover. Zombies count as gone.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from hasql_core.testing.cluster import LocalCluster

Ident = tuple[int, int]


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    head, _, tail = raw.rpartition(")")
    if not head:
        return None
    return [head, *tail.split()]


def identity(pid: int) -> Ident | None:
    """(pid, start time) of a live, non-zombie process; None when there is none."""
    fields = _stat(pid)
    if fields is None or len(fields) < 21 or fields[1] == "Z":
        return None
    return pid, int(fields[20])


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and len(fields) > 2:
                children.setdefault(int(fields[2]), []).append(int(entry))
    return children


def tree(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def snapshot(cluster: LocalCluster) -> set[Ident]:
    """Every live server process of ``cluster`` (postmasters and their children), and its proxy
    process."""
    roots = [node.pid for node in cluster.nodes if node.pid is not None]
    proxy_server = getattr(cluster, "_proxy_server", None)
    proxy_pid = getattr(proxy_server, "pid", None)
    found: set[Ident] = set()
    for root in roots:
        for pid in tree(root):
            ident = identity(pid)
            if ident is not None:
                found.add(ident)
    if isinstance(proxy_pid, int):
        ident = identity(proxy_pid)
        if ident is not None:
            found.add(ident)
    return found


def alive(idents: Iterable[Ident]) -> list[Ident]:
    """Those of ``idents`` still running (same pid, same start time, not a zombie)."""
    return sorted(ident for ident in idents if identity(ident[0]) == ident)


def describe(ident: Ident) -> str:
    """``pid (command line)`` for the report."""
    pid = ident[0]
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            command = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        command = "?"
    return f"{pid} ({command[:80]})"
