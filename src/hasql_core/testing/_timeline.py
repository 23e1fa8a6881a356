"""Timelines of a local cluster: LSNs, timeline history files, and whether a replica can follow.

A promotion starts a new timeline that forks off its parent at a switch point (an LSN), recorded
in the new primary's ``pg_wal/<timeline>.history``. A replica can follow the new timeline only if
its WAL ends at or before that switch point; WAL past it exists nowhere in the new primary's
history, so PostgreSQL refuses ("new timeline N forked off current database system timeline M
before current recovery point") and the replica needs pg_rewind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hasql_core.errors import ClusterError

_HISTORY_NAME = re.compile(r"^([0-9A-F]{8})\.history$")
_SEGMENT_NAME = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})(\.partial)?$")


def parse_lsn(text: str) -> int:
    """Return the LSN ``text`` (``"16/B374D848"``) as an int; ClusterError when malformed."""
    high, sep, low = text.strip().partition("/")
    try:
        if not sep:
            raise ValueError(text)
        return (int(high, 16) << 32) | int(low, 16)
    except ValueError:
        raise ClusterError(f"not an LSN: {text!r}") from None


def format_lsn(lsn: int) -> str:
    """Return ``lsn`` the way PostgreSQL prints it (``"16/B374D848"``)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


@dataclass(frozen=True)
class Position:
    """Where a server's WAL ends: ``timeline`` and ``lsn`` (as IDENTIFY_SYSTEM reports them)."""

    timeline: int
    lsn: int


@dataclass(frozen=True)
class History:
    """A server's newest timeline and, for each ancestor timeline, the LSN where it ended."""

    timeline: int
    switch_points: dict[int, int]


@dataclass(frozen=True)
class Divergence:
    """A replica that cannot follow a source: its ``timeline``, and the ``lsn`` where the
    source's history leaves that timeline (None when that timeline is not in the source's
    history at all)."""

    timeline: int
    lsn: int | None


def parse_history(text: str) -> dict[int, int]:
    """Parse a timeline history file: each parent timeline mapped to its switch point."""
    switch_points: dict[int, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 2 or not fields[0].isdigit():
            raise ClusterError(f"malformed timeline history line: {line!r}")
        switch_points[int(fields[0])] = parse_lsn(fields[1])
    return switch_points


def newest_history(wal_dir: Path) -> History:
    """Read the newest timeline history file in ``wal_dir`` (a ``pg_wal`` directory).

    A server that was never promoted and never followed a promotion has none: timeline 1.
    """
    timelines = [
        int(match.group(1), 16)
        for match in map(_HISTORY_NAME.match, (entry.name for entry in wal_dir.iterdir()))
        if match
    ]
    if not timelines:
        return History(1, {})
    newest = max(timelines)
    text = (wal_dir / f"{newest:08X}.history").read_text()
    return History(newest, parse_history(text))


def divergence(replica: Position, source: History) -> Divergence | None:
    """Whether a replica whose WAL ends at ``replica`` can follow a server with ``source``'s
    history: None when it can (same timeline, or an ancestor timeline left no earlier than the
    replica's end), else where it diverged."""
    if replica.timeline == source.timeline:
        return None
    switch_point = source.switch_points.get(replica.timeline)
    if switch_point is not None and replica.lsn <= switch_point:
        return None
    return Divergence(replica.timeline, switch_point)


def segments_from(wal_dir: Path, timeline: int, lsn: int, segment_size: int) -> list[Path]:
    """The WAL segment files (``.partial`` ones too) in ``wal_dir`` of ``timeline`` that hold
    ``lsn`` or anything after it."""
    first = lsn // segment_size
    per_id = 0x100000000 // segment_size
    found = []
    for entry in wal_dir.iterdir():
        match = _SEGMENT_NAME.match(entry.name)
        if match is None or int(match.group(1), 16) != timeline:
            continue
        segment = int(match.group(2), 16) * per_id + int(match.group(3), 16)
        if segment >= first:
            found.append(entry)
    return found
