"""hasql-core's driver suite, for both dialects.

The suite writes plain ``postgresql://`` DSNs, so the psycopg runs use a driver whose default
dialect is psycopg (:class:`sqlalchemy_helpers.PsycopgByDefaultDriver`), passed by class where the
suite names the driver. The suite's ``min_size``/``max_size`` are SQLAlchemy's ``pool_size``
(opened with the pool, kept open) and ``pool_size + max_overflow``; a ``min_size`` of 0 is
``pool_size=max_size`` (``pool_size=0`` means no limit to SQLAlchemy).
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy_helpers import SqlalchemySql, driver_for

from hasql_core.testing.driver_suite import *  # noqa: F403 - the suite's tests and fixtures


class SqlalchemySuiteAdapter(SqlalchemySql):
    """The suite's view of this driver for one dialect (pool sizes: ``SqlalchemySql.pool_options``)."""

    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        self.driver_name: Any = driver_for(dialect)


@pytest.fixture
def driver_suite_adapter(dialect: str) -> SqlalchemySuiteAdapter:
    return SqlalchemySuiteAdapter(dialect)


@pytest.fixture(autouse=True)
def _sqlalchemy_keeps_no_overflow(request: pytest.FixtureRequest) -> None:
    if request.node.originalname == "test_pool_sizes_and_stats_are_exactly_what_the_user_asked":
        pytest.skip(
            "SQLAlchemy closes an overflow connection when it comes back (a QueuePool keeps "
            "pool_size open, not max), so size=max at rest cannot hold; "
            "test_sqlalchemy_driver.py checks sizes and statistics the SQLAlchemy way"
        )
