"""Run one statement on a driver's own connection, whatever the driver (asyncpg or DB-API style)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


async def fetch_row(connection: Any, sql: str) -> Sequence[Any]:
    """Run ``sql`` (no parameters) and return its first row's values; ``()`` when there is none.

    asyncpg-like connections (``fetchrow``) are used directly; others are treated as psycopg 3 style
    (``await connection.execute(sql)`` returns a cursor) and committed afterwards.
    """
    fetchrow = getattr(connection, "fetchrow", None)
    if fetchrow is not None:
        record = await fetchrow(sql)
        return () if record is None else tuple(record.values())
    cursor = await connection.execute(sql)
    row = await cursor.fetchone()
    commit = getattr(connection, "commit", None)
    if commit is not None:
        await commit()
    return () if row is None else tuple(row)
