"""Helpers shared by the psycopg3 driver tests (a uniquely named module, imported by path)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from hasql_core.testing.drivers import client_backends as backends
from hasql_core.testing.drivers import eventually, node_dsn

__all__ = ["DRIVER_NAME", "backends", "eventually", "node_dsn", "shut"]

#: The driver name under test; the nox session sets it, each plugin test run names one.
DRIVER_NAME = os.environ.get("HASQL_TEST_DRIVER", "psycopg3")


async def shut(driver: Any, pool: Any) -> None:
    """Test clean-up: close ``pool`` gracefully, or terminate it when a failed test holds one of
    its connections (a graceful close would wait for it forever)."""
    try:
        await asyncio.wait_for(driver.close_pool(pool), 5.0)
    except asyncio.TimeoutError:
        await driver.terminate_pool(pool)
