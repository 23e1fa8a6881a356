"""Facts about a postmaster read from its data directory, and stopping one safely by pid.

A postmaster is only ever signalled when the pid in ``postmaster.pid`` runs with that very data
directory as its working directory (PostgreSQL chdirs there), so no unrelated process is touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
from dataclasses import dataclass
from pathlib import Path

from hasql_core.testing import _procs

#: ``postmaster.pid`` status values (line 8) meaning "accepting connections".
READY = "ready"
STANDBY = "standby"
_IPC_RMID = 0


@dataclass(frozen=True)
class PidFile:
    """The parsed ``postmaster.pid`` of a data directory."""

    pid: int
    status: str
    shm_key: int | None
    shm_id: int | None


def read_pidfile(data_dir: Path) -> PidFile | None:
    """Return the parsed ``postmaster.pid`` of ``data_dir``; None when absent or incomplete."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, PermissionError):
        return None
    if not lines or not lines[0].strip().lstrip("-").isdigit():
        return None
    shm_key = shm_id = None
    if len(lines) >= 7:
        parts = lines[6].split()
        if len(parts) == 2 and all(part.lstrip("-").isdigit() for part in parts):
            shm_key, shm_id = int(parts[0]), int(parts[1])
    status = lines[7].strip() if len(lines) >= 8 else ""
    return PidFile(abs(int(lines[0])), status, shm_key, shm_id)


def owns_data_dir(pid: int, data_dir: Path) -> bool:
    """Return True when process ``pid`` is alive and runs in ``data_dir`` (i.e. is its server)."""
    cwd = _procs.process_cwd(pid)
    return cwd is not None and _procs.pid_alive(pid) and os.path.realpath(data_dir) == cwd


def shm_segments() -> dict[int, tuple[int, int, int]]:
    """Map each System V shared memory id to (key, attach count, owner uid)."""
    segments: dict[int, tuple[int, int, int]] = {}
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return segments
    for line in lines:
        fields = line.split()
        if len(fields) >= 8:
            segments[int(fields[1])] = (int(fields[0]), int(fields[6]), int(fields[7]))
    return segments


def remove_shm(shm_key: int | None, shm_id: int | None) -> bool:
    """Remove the segment ``shm_id`` if it still has key ``shm_key`` and nothing is attached.

    Returns True when a segment was removed.
    """
    if shm_id is None or shm_key is None:
        return False
    info = shm_segments().get(shm_id)
    if info is None or info[0] != shm_key or info[1] != 0:
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return int(libc.shmctl(ctypes.c_int(shm_id), ctypes.c_int(_IPC_RMID), None)) == 0


def thaw_tree(pid: int) -> list[int]:
    """SIGCONT every descendant of ``pid``, then ``pid``; return the descendants."""
    children = _procs.descendants(pid)
    for child in children:
        _procs.send_signal(child, signal.SIGCONT)
    _procs.send_signal(pid, signal.SIGCONT)
    return children


def terminate_data_dir(data_dir: Path, timeout: float = 5.0) -> PidFile | None:
    """Stop whatever server runs ``data_dir`` (thaw, immediate shutdown, then SIGKILL).

    Used for leftovers of a dead owner and as a last resort on teardown. Returns the pid file that
    was found (for its shared memory ids), or None when there was none.
    """
    info = read_pidfile(data_dir)
    if info is None:
        return None
    if owns_data_dir(info.pid, data_dir):
        children = thaw_tree(info.pid)
        _procs.send_signal(info.pid, signal.SIGQUIT)
        if _procs.wait_gone([info.pid], timeout):
            for pid in [info.pid, *children]:
                if owns_data_dir(pid, data_dir):
                    _procs.send_signal(pid, signal.SIGKILL)
        _procs.wait_gone([info.pid, *children], timeout)
    return info
