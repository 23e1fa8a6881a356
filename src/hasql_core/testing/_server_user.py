"""The operating-system user that runs the PostgreSQL server binaries.

PostgreSQL refuses to run as root. As an ordinary user the servers run as that user; as root they
run as a dedicated unprivileged system user (``hasql-pg``, or ``$HASQL_PG_USER``), created once when
missing.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hasql_core.errors import ClusterError

DEFAULT_SERVER_USER = "hasql-pg"
SERVER_USER_ENV = "HASQL_PG_USER"


@dataclass(frozen=True)
class ServerUser:
    """Who runs the server binaries: ``name``, ``uid`` and ``gid``.

    ``is_current`` is True when that is the calling process's own user (nothing to switch to).
    """

    name: str
    uid: int
    gid: int
    is_current: bool

    def popen_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :class:`subprocess.Popen` that run the child as this user."""
        if self.is_current:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def give(self, path: Path) -> None:
        """Make ``path`` (not recursively) owned by this user; a no-op for the current user."""
        if not self.is_current:
            os.chown(path, self.uid, self.gid, follow_symlinks=False)

    def can_reach(self, path: Path) -> bool:
        """Return True when this user may traverse every directory down to ``path``."""
        if self.is_current:
            return True
        for directory in [path, *path.parents]:
            try:
                info = directory.stat()
            except FileNotFoundError:
                continue  # will be created by us, with a suitable mode
            if info.st_uid == self.uid:
                bit = stat.S_IXUSR
            elif info.st_gid == self.gid:
                bit = stat.S_IXGRP
            else:
                bit = stat.S_IXOTH
            if not info.st_mode & bit:
                return False
        return True

    def give_tree(self, path: Path) -> None:
        """Make ``path`` and everything below it owned by this user."""
        if self.is_current:
            return
        self.give(path)
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.chown(os.path.join(root, name), self.uid, self.gid, follow_symlinks=False)


def _create_system_user(name: str) -> None:
    """Create ``name`` with ``useradd --system``; a concurrent creation of it is fine."""
    useradd = shutil.which("useradd") or (
        "/usr/sbin/useradd" if Path("/usr/sbin/useradd").exists() else None
    )
    if useradd is None:
        raise ClusterError(
            f"PostgreSQL cannot run as root and the user {name!r} does not exist; `useradd` "
            "was not found to create it. Create an unprivileged user and set "
            f"{SERVER_USER_ENV} to its name, or run the tests as an ordinary user."
        )
    deadline = time.monotonic() + 15.0
    last_error = ""
    while True:
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        result = subprocess.run(
            [
                useradd,
                "--system",
                "--no-create-home",
                "--user-group",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0:
            return
        # 9: the user exists already (created concurrently); 1 or 10: /etc/passwd locked, try again.
        last_error = result.stderr.strip()
        if time.monotonic() >= deadline:
            raise ClusterError(f"could not create the system user {name!r}: {last_error}")
        time.sleep(0.05)


def resolve_server_user() -> ServerUser:
    """Return the user that must run the server binaries, creating the system user when root.

    Raises ClusterError when running as root and the user cannot be created.
    """
    euid = os.geteuid()
    if euid != 0:
        entry = pwd.getpwuid(euid)
        return ServerUser(entry.pw_name, euid, os.getegid(), True)
    name = os.environ.get(SERVER_USER_ENV) or DEFAULT_SERVER_USER
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        _create_system_user(name)
        entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise ClusterError(f"{SERVER_USER_ENV}={name!r} is root; PostgreSQL refuses to run as root")
    return ServerUser(entry.pw_name, entry.pw_uid, entry.pw_gid, False)
