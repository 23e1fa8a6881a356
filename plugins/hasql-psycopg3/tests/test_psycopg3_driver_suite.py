"""hasql-core's driver suite, run for the driver named by HASQL_TEST_DRIVER (psycopg3, psycopg)."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg3_helpers import DRIVER_NAME

from hasql_core.testing.driver_suite import *  # noqa: F403 - the suite's tests and fixtures


class PsycopgSuiteAdapter:
    """SQL on psycopg ``AsyncConnection`` objects (not in autocommit unless the user asks)."""

    driver_name = DRIVER_NAME

    def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
        return {"min_size": min_size, "max_size": max_size}

    async def fetchval(self, connection: Any, sql: str) -> Any:
        cursor = await connection.execute(sql)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def execute(self, connection: Any, sql: str) -> None:
        await connection.execute(sql)
        await connection.commit()

    async def begin(self, connection: Any, *, read_only: bool = False) -> None:
        if connection.autocommit:
            await connection.execute("BEGIN READ ONLY" if read_only else "BEGIN")
        else:  # psycopg sends BEGIN itself before the first statement
            await connection.execute("SET TRANSACTION READ ONLY" if read_only else "SELECT 1")


@pytest.fixture
def driver_suite_adapter() -> PsycopgSuiteAdapter:
    return PsycopgSuiteAdapter()
