"""Timeline arithmetic of the local cluster (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hasql_core.errors import ClusterError
from hasql_core.testing import _timeline
from hasql_core.testing._timeline import Divergence, History, Position

SEGMENT = 16 * 1024 * 1024


def test_lsn_round_trip() -> None:
    assert _timeline.parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    assert _timeline.format_lsn(_timeline.parse_lsn("0/1519328")) == "0/1519328"
    for bad in ("", "1519328", "0/xyz"):
        with pytest.raises(ClusterError, match="not an LSN"):
            _timeline.parse_lsn(bad)


def test_parse_history() -> None:
    text = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore x\n"
    assert _timeline.parse_history(text) == {1: 0x3000158, 2: 0x5000000}
    with pytest.raises(ClusterError, match="malformed"):
        _timeline.parse_history("x\t0/1\n")


def test_newest_history(tmp_path: Path) -> None:
    assert _timeline.newest_history(tmp_path) == History(1, {})
    (tmp_path / "00000002.history").write_text("1\t0/3000158\treason\n")
    (tmp_path / "0000000A.history").write_text("1\t0/3000158\tr\n2\t0/4000000\tr\n")
    (tmp_path / "000000010000000000000003").write_bytes(b"")
    assert _timeline.newest_history(tmp_path) == History(10, {1: 0x3000158, 2: 0x4000000})


def test_divergence() -> None:
    source = History(3, {1: 0x3000000, 2: 0x5000000})
    assert _timeline.divergence(Position(3, 0x9000000), source) is None
    assert _timeline.divergence(Position(2, 0x5000000), source) is None
    assert _timeline.divergence(Position(1, 0x2000000), source) is None
    assert _timeline.divergence(Position(2, 0x5000001), source) == Divergence(2, 0x5000000)
    assert _timeline.divergence(Position(4, 0x1000000), source) == Divergence(4, None)


def test_segments_from(tmp_path: Path) -> None:
    names = [
        "000000010000000000000002",
        "000000010000000000000003",
        "000000010000000100000000",
        "000000010000000000000004.partial",
        "000000020000000000000003",
        "00000002.history",
        "archive_status",
    ]
    for name in names:
        (tmp_path / name).touch()
    found = _timeline.segments_from(tmp_path, 1, 0x3000158, SEGMENT)
    assert sorted(path.name for path in found) == [
        "000000010000000000000003",
        "000000010000000000000004.partial",
        "000000010000000100000000",
    ]
