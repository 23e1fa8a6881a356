"""Where clusters live on disk, who owns them, and removing the leftovers of dead owners.

Each cluster has an *entry* directory ``<root>/c-<pid>-<token>/`` under a per-user runtime root
(``/dev/shm/hasql-pg-<euid>`` when /dev/shm has room, else ``$TMPDIR/hasql-pg-<euid>``). The entry
holds ``owner.json`` (owner pid and start time, data directories, proxy pid), a ``lock`` file on
which the owning process keeps an exclusive ``flock`` for the cluster's life, and the short Unix
socket directories. A cluster is a leftover when its lock can be taken and its owner process is
gone; its servers are then stopped by pid (see :mod:`._postmaster`) and its directories removed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from hasql_core.errors import ClusterError
from hasql_core.testing import _postmaster, _procs

_SHM = Path("/dev/shm")
_ENTRY_PREFIX = "c-"
_OWNER_FILE = "owner.json"
_LOCK_FILE = "lock"


def _root_candidates() -> list[Path]:
    """Every runtime root this user may have used, /dev/shm first."""
    name = f"hasql-pg-{os.geteuid()}"
    roots = [_SHM / name] if _SHM.is_dir() else []
    roots.append(Path(tempfile.gettempdir()) / name)
    return roots


def _ensure_private_root(root: Path) -> Path:
    """Create ``root`` (mode 0755, owned by us) or check that an existing one is ours."""
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o755)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
        raise ClusterError(f"{root} exists but is not a directory owned by uid {os.geteuid()}")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ClusterError(f"{root} is writable by other users; remove it and retry")
    os.chmod(root, 0o755)
    return root


def runtime_root(needed_bytes: int) -> Path:
    """Return the runtime root: on /dev/shm when it has ``needed_bytes`` free, else in $TMPDIR."""
    candidates = _root_candidates()
    for root in candidates[:-1]:
        try:
            fs = os.statvfs(root.parent)
        except OSError:
            continue
        if fs.f_bavail * fs.f_frsize >= needed_bytes and os.access(root.parent, os.W_OK):
            return _ensure_private_root(root)
    return _ensure_private_root(candidates[-1])


@dataclass
class Entry:
    """A cluster's entry directory, and the open lock file that marks its owner as alive."""

    path: Path
    lock_fd: int
    record: dict[str, object] = field(default_factory=dict)

    def save(self, **updates: object) -> None:
        """Merge ``updates`` into ``owner.json`` (written atomically)."""
        self.record.update(updates)
        tmp = self.path / f".{_OWNER_FILE}.tmp"
        tmp.write_text(json.dumps(self.record))
        tmp.replace(self.path / _OWNER_FILE)

    def release(self) -> None:
        """Delete the entry directory and drop the lock (the cluster is gone)."""
        shutil.rmtree(self.path, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)
        self.lock_fd = -1


def create_entry(root: Path) -> Entry:
    """Create a fresh entry under ``root``, locked and recorded as owned by this process."""
    pid = os.getpid()
    token = secrets.token_hex(4)
    # Built under a staging name and renamed once locked and recorded, so a concurrent reaper never
    # sees an entry without its owner.
    staging = root / f".new.tmp-{pid}-{token}"
    staging.mkdir(mode=0o755)
    lock_fd = os.open(staging / _LOCK_FILE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    entry = Entry(staging, lock_fd)
    entry.save(pid=pid, start_time=_procs.process_start_time(pid), data_dirs=[], data_home=None)
    entry.path = root / f"{_ENTRY_PREFIX}{pid}-{token}"
    staging.rename(entry.path)
    return entry


def _owner_alive(record: dict[str, object]) -> bool:
    """Return True when the process recorded in ``record`` still runs (same pid and start time)."""
    pid = record.get("pid")
    if not isinstance(pid, int):
        return False
    start = _procs.process_start_time(pid)
    return start is not None and start == record.get("start_time") and _procs.pid_alive(pid)


def _reap(entry: Path, record: dict[str, object]) -> None:
    """Stop the servers and proxy of a dead owner's cluster, free its shared memory, delete it."""
    proxy_pid = record.get("proxy_pid")
    if isinstance(proxy_pid, int) and any(
        "_proxy_server" in arg for arg in _procs.process_cmdline(proxy_pid)
    ):
        _procs.send_signal(proxy_pid, signal.SIGKILL)
    found: list[_postmaster.PidFile] = []
    data_dirs = record.get("data_dirs")
    for data_dir in data_dirs if isinstance(data_dirs, list) else []:
        info = _postmaster.terminate_data_dir(Path(str(data_dir)))
        if info is not None:
            found.append(info)
    for info in found:
        _postmaster.remove_shm(info.shm_key, info.shm_id)
    data_home = record.get("data_home")
    if isinstance(data_home, str) and Path(data_home).name.startswith("hasql-"):
        shutil.rmtree(data_home, ignore_errors=True)
    shutil.rmtree(entry, ignore_errors=True)


def _try_reap(entry: Path) -> None:
    """Reap ``entry`` when nobody holds its lock and its owner is dead."""
    try:
        lock_fd = os.open(entry / _LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        # Being created right now (lock not yet there) or being deleted: leave it alone.
        return
    except OSError:
        return
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # the owner (or another reaper) holds it
        try:
            record = json.loads((entry / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            record = {}
        if not isinstance(record, dict) or _owner_alive(record):
            return
        _reap(entry, record)
    finally:
        os.close(lock_fd)


def _stale_staging(path: Path) -> bool:
    """Return True for a ``*.tmp-<pid>-<token>`` staging directory whose creator is dead."""
    _, sep, tail = path.name.rpartition(".tmp-")
    pid = tail.split("-", 1)[0]
    return bool(sep) and pid.isdigit() and not _procs.pid_alive(int(pid))


def reap_leftovers() -> None:
    """Remove every cluster of this user whose owner process died without closing it.

    Also removes half-built template and binary copies whose builder died. Never raises for a
    leftover it cannot fully remove.
    """
    for root in _root_candidates():
        try:
            children = list(root.iterdir())
        except OSError:
            continue
        for child in children:
            if child.name.startswith(_ENTRY_PREFIX) and child.is_dir():
                _try_reap(child)
            elif _stale_staging(child):
                shutil.rmtree(child, ignore_errors=True)
    tmp = Path("/tmp")
    with contextlib.suppress(OSError):
        for child in tmp.glob(".hasql-pg-*.tmp-*"):
            if _stale_staging(child) and child.lstat().st_uid == os.geteuid():
                shutil.rmtree(child, ignore_errors=True)
