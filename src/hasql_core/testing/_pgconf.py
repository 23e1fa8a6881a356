"""PostgreSQL configuration text for the local cluster: settings, pg_hba.conf, conninfo strings.

Only settings shared by every node live in the configuration files (they are carried along by
the initdb cache, file copies and pg_rewind). Per-node settings (port, socket directory,
cluster_name) go on the ``postgres`` command line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from hasql_core.errors import ClusterError
from hasql_core.testing._server_user import ServerUser

#: Settings every node gets (see shared notes on running a local HA cluster).
BASE_SETTINGS: dict[str, str] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "100",
    "wal_level": "replica",
    "max_wal_senders": "10",
    "max_replication_slots": "10",
    "hot_standby": "on",
    "wal_log_hints": "on",
    "fsync": "off",
    "synchronous_commit": "on",
    "shared_buffers": "32MB",
    "max_wal_size": "256MB",
    "wal_keep_size": "128MB",
    "wal_retrieve_retry_interval": "100ms",
    "dynamic_shared_memory_type": "mmap",
    "huge_pages": "off",
    "password_encryption": "scram-sha-256",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%a ",
    "jit": "off",
}

#: Unix sockets are trusted; TCP needs a SCRAM password, except replication by ``postgres``.
HBA_CONF = """\
# hasql-core LocalCluster
# TYPE  DATABASE     USER      ADDRESS       METHOD
local   all          all                     trust
local   replication  all                     trust
host    replication  postgres  127.0.0.1/32  trust
host    all          all       127.0.0.1/32  scram-sha-256
"""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def quote_value(value: str) -> str:
    """Quote ``value`` as a string literal for postgresql.conf."""
    return "'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def quote_conninfo(value: str) -> str:
    """Quote ``value`` for a libpq ``key=value`` connection string."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_literal(value: str) -> str:
    """Quote ``value`` as an SQL string literal (standard_conforming_strings on)."""
    return "'" + value.replace("'", "''") + "'"


def quote_ident(value: str) -> str:
    """Quote ``value`` as an SQL identifier."""
    return '"' + value.replace('"', '""') + '"'


def check_settings(settings: Mapping[str, str]) -> dict[str, str]:
    """Return ``settings`` as a plain dict of str, or raise ClusterError for a malformed name."""
    checked: dict[str, str] = {}
    for name, value in settings.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ClusterError(f"invalid PostgreSQL setting name {name!r}")
        checked[name] = str(value)
    return checked


def render_settings(settings: Mapping[str, str]) -> str:
    """Render ``settings`` as postgresql.conf lines."""
    return "".join(f"{name} = {quote_value(value)}\n" for name, value in settings.items())


def write_file(path: Path, text: str, owner: ServerUser, *, mode: int = 0o600) -> None:
    """Atomically replace ``path`` with ``text``, owned by ``owner``."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    owner.give(tmp)
    tmp.replace(path)


def append_file(path: Path, text: str) -> None:
    """Append ``text`` to the existing file ``path`` (its owner is unchanged)."""
    with path.open("a") as handle:
        handle.write(text)


def update_auto_conf(data_dir: Path, updates: Mapping[str, str | None], owner: ServerUser) -> None:
    """Set (or, with None, remove) settings in ``postgresql.auto.conf`` of a stopped server.

    This is what ``ALTER SYSTEM`` would write; use it while the server is down, e.g. after a file
    copy or pg_rewind, which carry another node's auto.conf along.
    """
    path = data_dir / "postgresql.auto.conf"
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    names = {name.lower() for name in updates}
    kept = [
        line
        for line in lines
        if line.split("=", 1)[0].strip().lower() not in names or "=" not in line
    ]
    for name, value in updates.items():
        if value is not None:
            kept.append(f"{name} = {quote_value(value)}\n")
    write_file(path, "".join(kept), owner)


def primary_conninfo(port: int, application_name: str) -> str:
    """Return the ``primary_conninfo`` of a replica streaming from 127.0.0.1:``port``."""
    return (
        f"host=127.0.0.1 port={port} user=postgres "
        f"application_name={quote_conninfo(application_name)} connect_timeout=2"
    )
