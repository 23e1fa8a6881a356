"""The driver conformance suite of hasql-core, run for the driver named by HASQL_TEST_DRIVER."""

from __future__ import annotations

from typing import Any

import pytest
from asyncpg_helpers import DRIVER_NAME

from hasql_core.testing.conformance import *  # noqa: F403 - the suite's tests and fixtures
from hasql_core.testing.conformance import SqlRunner, conformance_cluster, conformance_manager

__all__ = ["conformance_cluster", "conformance_manager"]


class AsyncpgSql:
    """Runs the suite's SQL on asyncpg connections (asyncpgsa's are asyncpg connections too)."""

    async def fetchval(self, connection: Any, sql: str) -> Any:
        return await connection.fetchval(sql)

    async def execute(self, connection: Any, sql: str) -> None:
        await connection.execute(sql)  # asyncpg runs outside a transaction: committed at once


@pytest.fixture
def conformance_driver() -> str:
    return DRIVER_NAME


@pytest.fixture
def conformance_sql() -> SqlRunner:
    return AsyncpgSql()
