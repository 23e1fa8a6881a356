"""psycopg specifics of the monitor connection: its default ``application_name``.

What every driver's monitor must do (probe types and values, promotion, frozen and stopped hosts)
is proven by hasql-core's driver suite (test_psycopg3_driver_suite.py).
"""

from __future__ import annotations

import pytest
from hasql_psycopg3.driver import MONITOR_APPLICATION_NAME, PsycopgDriver
from psycopg3_helpers import backends, node_dsn

from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


async def test_monitor_application_name(
    cluster: LocalCluster, driver: PsycopgDriver, app_name: str
) -> None:
    default = await driver.connect_monitor(node_dsn(cluster.primary), 5.0)
    named = await driver.connect_monitor(node_dsn(cluster.primary, application_name=app_name), 5.0)
    try:
        cur = await default.execute("SHOW application_name")
        assert await cur.fetchone() == (MONITOR_APPLICATION_NAME,)
        assert await backends(cluster, cluster.primary, app_name) == [named.info.backend_pid]
    finally:
        await driver.close_monitor(default)
        await driver.close_monitor(named)
