"""Running SQL through the ``psql`` binary over a node's Unix socket (no driver needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from hasql_core.errors import ClusterError

FIELD_SEPARATOR = "\x1f"
_RECORD_SEPARATOR = "\0"


def clean_env(**extra: str) -> dict[str, str]:
    """Return the process environment without libpq ``PG*`` variables, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.setdefault("LC_ALL", "C")
    env.update(extra)
    return env


def parse_output(out: str) -> list[tuple[str, ...]]:
    """Split psql ``-A -t -0 -F <US>`` output into rows of text fields (NULL becomes ``""``)."""
    if not out:
        return []
    if out.endswith(_RECORD_SEPARATOR):
        out = out[:-1]
    return [tuple(record.split(FIELD_SEPARATOR)) for record in out.split(_RECORD_SEPARATOR)]


def run_psql(
    psql: Path,
    *,
    socket_dir: Path,
    port: int,
    sql: str,
    label: str,
    dbname: str = "postgres",
    user: str = "postgres",
    timeout: float = 30.0,
) -> list[tuple[str, ...]]:
    """Run ``sql`` with ``psql`` over the Unix socket in ``socket_dir`` and return the result rows.

    Statements run in one ``-c`` call (one implicit transaction unless the SQL says otherwise) with
    ``ON_ERROR_STOP``; the rows of the last statement are returned as tuples of strings. Raises
    ClusterError naming ``label`` on failure or when ``timeout`` seconds pass.
    """
    command = [
        str(psql),
        "-X",
        "-q",
        "-A",
        "-t",
        "-0",
        "-F",
        FIELD_SEPARATOR,
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        str(socket_dir),
        "-p",
        str(port),
        "-U",
        user,
        "-d",
        dbname,
        "-c",
        sql,
    ]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=clean_env(PGCONNECT_TIMEOUT=str(max(2, int(timeout)))),
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(
            f"{label}: SQL did not finish within {timeout:g} s: {sql[:200]}"
        ) from exc
    if result.returncode != 0:
        raise ClusterError(f"{label}: SQL failed: {result.stderr.strip()} (SQL: {sql[:200]})")
    return parse_output(result.stdout)
