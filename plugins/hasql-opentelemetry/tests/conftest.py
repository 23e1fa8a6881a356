"""Fixtures for the hasql-opentelemetry tests: a meter provider of the test's own with the SDK's
in-memory reader, and an observer reporting to it (see otel_helpers.Telemetry).

The tests over real servers use hasql-core's ``hasql_cluster`` fixture and the asyncpg driver; the
others use hasql-core's fake driver.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from otel_helpers import Telemetry


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """A meter provider with an in-memory reader, and an observer on it; shut down after."""
    telemetry = Telemetry()
    yield telemetry
    telemetry.provider.shutdown()
