"""psycopg's own exception classes: the facts the driver reads from them.

The server answers every driver must read the same way (read-only, terminated sessions, SQL
errors, refused connections) are in hasql-core's driver suite (test_psycopg3_driver_suite.py).
"""

from __future__ import annotations

import asyncio

import psycopg
import psycopg_pool
import pytest
from hasql_psycopg3.driver import PsycopgDriver, PsycopgPoolTimeout
from psycopg import errors as pg_errors

from hasql_core.driver import ErrorFacts, ErrorKind

pytestmark = pytest.mark.timeout(120)


def test_classification_of_library_and_other_errors(driver: PsycopgDriver) -> None:
    # Real psycopg exception classes, as psycopg builds them for these SQLSTATEs.
    assert driver.classify_error(pg_errors.lookup("57P03")("starting up")) is ErrorKind.UNAVAILABLE
    assert driver.classify_error(pg_errors.lookup("57P02")("crash")) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(pg_errors.lookup("08006")("failure")) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(pg_errors.lookup("25006")("ro")) is ErrorKind.READ_ONLY
    assert driver.classify_error(pg_errors.lookup("53300")("too many")) is ErrorKind.OTHER
    assert driver.classify_error(ConnectionResetError()) is ErrorKind.CONNECTION_LOST
    assert driver.classify_error(psycopg_pool.PoolTimeout()) is ErrorKind.OTHER
    assert driver.classify_error(psycopg_pool.PoolClosed()) is ErrorKind.OTHER
    assert driver.classify_error(PsycopgPoolTimeout()) is ErrorKind.OTHER
    assert driver.classify_error(asyncio.TimeoutError()) is ErrorKind.OTHER
    assert driver.classify_error(asyncio.CancelledError()) is ErrorKind.OTHER
    assert driver.classify_error(ValueError()) is ErrorKind.OTHER
    # An application error raised from a lost connection is about the host too.
    lost = pg_errors.lookup("57P01")("terminating connection")
    wrapped = RuntimeError("request failed")
    wrapped.__cause__ = lost
    assert driver.classify_error(wrapped) is ErrorKind.CONNECTION_LOST
    # The facts behind those kinds.
    assert driver.error_facts(wrapped) == ErrorFacts(sqlstate="57P01")
    assert driver.error_facts(psycopg.OperationalError("no sqlstate")) == ErrorFacts(
        connection_lost=True
    )
    assert driver.error_facts(PsycopgPoolTimeout()) == ErrorFacts()
