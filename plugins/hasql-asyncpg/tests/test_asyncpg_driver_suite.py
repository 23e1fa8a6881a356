"""hasql-core's driver suite, run for the driver named by HASQL_TEST_DRIVER (asyncpg, asyncpgsa)."""

from __future__ import annotations

from typing import Any

import pytest
from asyncpg_helpers import DRIVER_NAME

from hasql_core.testing.driver_suite import *  # noqa: F403 - the suite's tests and fixtures


class AsyncpgSuiteAdapter:
    """SQL on asyncpg pool connections (asyncpgsa's are asyncpg connections too)."""

    driver_name = DRIVER_NAME

    def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
        return {"min_size": min_size, "max_size": max_size}

    async def fetchval(self, connection: Any, sql: str) -> Any:
        return await connection.fetchval(sql)

    async def execute(self, connection: Any, sql: str) -> None:
        await connection.execute(sql)  # outside a transaction asyncpg commits at once

    async def begin(self, connection: Any, *, read_only: bool = False) -> None:
        await connection.execute("BEGIN READ ONLY" if read_only else "BEGIN")


@pytest.fixture
def driver_suite_adapter() -> AsyncpgSuiteAdapter:
    return AsyncpgSuiteAdapter()
