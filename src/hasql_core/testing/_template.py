"""A cached, configured ``initdb`` output per set of binaries, copied to make each node's data dir.

initdb takes most of a second; copying its output takes tens of milliseconds. The template is built
once per (bindir, server user, template version) under the runtime root, in a staging directory
that is renamed into place, so concurrent builders are safe.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import subprocess
from pathlib import Path

from hasql_core.errors import ClusterError
from hasql_core.testing import _pgconf
from hasql_core.testing._psql import clean_env
from hasql_core.testing._server_user import ServerUser

#: Bump when the template's content (settings, hba, initdb flags) changes.
TEMPLATE_VERSION = "2"
MIN_MAJOR_VERSION = 14
_PREFIX = "initdb-"
_SOURCE_FILE = "bindir.txt"
_UID_FILE = "uid.txt"


def _key(bindir: Path, uid: int) -> str:
    postgres = (bindir / "postgres").stat()
    material = "\0".join(
        [
            TEMPLATE_VERSION,
            str(bindir.resolve()),
            str(postgres.st_size),
            str(postgres.st_mtime_ns),
            str(uid),
            _pgconf.render_settings(_pgconf.BASE_SETTINGS),
            _pgconf.HBA_CONF,
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:16]


def _build(bindir: Path, owner: ServerUser, staging: Path) -> None:
    """Run initdb into ``staging/data`` as ``owner`` and write the shared configuration."""
    owner.give(staging)
    data = staging / "data"
    result = subprocess.run(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-sync",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-instructions",
        ],
        capture_output=True,
        text=True,
        cwd=staging,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
        **owner.popen_kwargs(),
    )
    if result.returncode != 0:
        raise ClusterError(f"initdb failed ({bindir / 'initdb'}): {result.stderr.strip()}")
    major = (data / "PG_VERSION").read_text().strip().split(".")[0]
    if not major.isdigit() or int(major) < MIN_MAJOR_VERSION:
        raise ClusterError(
            f"PostgreSQL {major} in {bindir} is too old; "
            f"the local cluster needs {MIN_MAJOR_VERSION}+"
        )
    (staging / _SOURCE_FILE).write_text(str(bindir))
    (staging / _UID_FILE).write_text(str(owner.uid))
    _pgconf.write_file(data / "pg_hba.conf", _pgconf.HBA_CONF, owner)
    _pgconf.append_file(
        data / "postgresql.conf",
        "\n# hasql-core LocalCluster\n" + _pgconf.render_settings(_pgconf.BASE_SETTINGS),
    )


def template_data_dir(bindir: Path, owner: ServerUser, root: Path) -> Path:
    """Return the cached, configured data directory for ``bindir`` under ``root`` (built once).

    The template belongs to ``owner``; copy it with :func:`copy_data_dirs`, never start it.
    """
    final = root / f"{_PREFIX}{_key(bindir, owner.uid)}"
    if (final / "data" / "PG_VERSION").exists():
        return final / "data"
    staging = root / f".initdb.tmp-{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700)
    try:
        _build(bindir, owner, staging)
        try:
            staging.rename(final)
        except OSError:
            if not (final / "data" / "PG_VERSION").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final / "data"


def prune_templates(root: Path) -> None:
    """Delete cached templates under ``root`` whose binaries are gone or have been replaced."""
    for path in root.glob(f"{_PREFIX}*"):
        try:
            bindir = Path((path / _SOURCE_FILE).read_text().strip())
            uid = int((path / _UID_FILE).read_text())
        except (OSError, ValueError):
            continue
        try:
            current = _key(bindir, uid)
        except OSError:  # the bin directory is gone
            current = None
        if path.name != f"{_PREFIX}{current}":
            shutil.rmtree(path, ignore_errors=True)


def _mirror_dir(source: Path, target: Path) -> None:
    """Create directory ``target`` with the mode and owner of ``source``."""
    info = source.stat()
    target.mkdir(mode=0o700)
    os.chmod(target, info.st_mode & 0o7777)
    if os.geteuid() == 0:
        os.chown(target, info.st_uid, info.st_gid)


class CopyJob:
    """A copy of ``template`` to ``target`` (which must not exist), running in the background.

    Started on construction with ``cp -a`` (keeps ownership and modes; several times faster than a
    Python tree copy). With ``without_wal`` the WAL segments are left out (the directory structure
    of ``pg_wal`` is kept): a standby built from the copy fetches that WAL from its primary, which
    has the very same, so replicas copy 16 MB less each. :meth:`wait` blocks until the copy is done
    and raises ClusterError on failure.
    """

    def __init__(self, template: Path, target: Path, *, without_wal: bool = False) -> None:
        self.target = target
        if without_wal:
            _mirror_dir(template, target)
            sources = [str(path) for path in template.iterdir() if path.name != "pg_wal"]
            command = ["cp", "-a", "-t", str(target), "--", *sources]
            wal = template / "pg_wal"
            _mirror_dir(wal, target / "pg_wal")
            for sub in wal.iterdir():
                if sub.is_dir() and not sub.is_symlink():
                    _mirror_dir(sub, target / "pg_wal" / sub.name)
        else:
            command = ["cp", "-a", "--", str(template), str(target)]
        self._proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait(self, timeout: float = 60.0) -> None:
        """Wait for the copy; raise ClusterError when it failed."""
        try:
            _, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, err = self._proc.communicate()
        if self._proc.returncode != 0:
            raise ClusterError(
                f"copying the initdb template to {self.target} failed: "
                f"{err.decode(errors='replace').strip()}"
            )
