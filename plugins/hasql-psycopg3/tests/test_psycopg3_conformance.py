"""hasql-core's driver conformance suite, run for the driver named by HASQL_TEST_DRIVER."""

from __future__ import annotations

from typing import Any

import pytest
from psycopg3_helpers import DRIVER_NAME

from hasql_core.testing.conformance import *  # noqa: F403 - the suite's tests and fixtures
from hasql_core.testing.conformance import SqlRunner, conformance_cluster, conformance_manager

__all__ = ["conformance_cluster", "conformance_manager"]

pytestmark = pytest.mark.timeout(180)


class PsycopgSql:
    """Runs the suite's SQL on psycopg ``AsyncConnection`` objects (not autocommit by default)."""

    async def fetchval(self, connection: Any, sql: str) -> Any:
        cursor = await connection.execute(sql)
        row = await cursor.fetchone()
        return None if row is None else row[0]

    async def execute(self, connection: Any, sql: str) -> None:
        await connection.execute(sql)
        await connection.commit()


@pytest.fixture
def conformance_driver() -> str:
    return DRIVER_NAME


@pytest.fixture
def conformance_sql() -> SqlRunner:
    return PsycopgSql()
