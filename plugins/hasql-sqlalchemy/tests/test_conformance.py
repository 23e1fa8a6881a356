"""hasql-core's manager-level conformance suite, for both dialects.

The suite writes plain ``postgresql://`` DSNs, so the psycopg runs use a driver whose default
dialect is psycopg (:class:`sqlalchemy_helpers.PsycopgByDefaultDriver`), passed by class; the
suite's pool sizes become ``pool_size``/``max_overflow`` through the runner's ``pool_options``
(:meth:`sqlalchemy_helpers.SqlalchemySql.pool_options`).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy_helpers import SqlalchemySql, driver_for

from hasql_core.testing.conformance import *  # noqa: F403 - the suite's tests and fixtures
from hasql_core.testing.conformance import SqlRunner, conformance_cluster, conformance_manager

__all__ = ["conformance_cluster", "conformance_manager"]

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def conformance_driver(dialect: str) -> Any:
    return driver_for(dialect)


@pytest.fixture
def conformance_sql() -> SqlRunner:
    return SqlalchemySql()
