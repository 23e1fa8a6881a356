"""The monitor connection, psycopg2's side of it: autocommit, idle with no snapshot after a probe,
its application_name. (Probes, promotions and frozen hosts are in hasql-core's driver suite.)"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg2.extensions
import pytest
from aiopg_helpers import node_dsn

from hasql_core.driver import Driver
from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import PROBE_QUERY, parse_probe_row

pytestmark = pytest.mark.timeout(60)

Drv = Driver[Any, Any, Any]


async def _activity(cluster: LocalCluster, node: Any, app_name: str) -> list[tuple[str, ...]]:
    return await asyncio.to_thread(
        cluster.execute,
        node,
        "SELECT state, backend_xid IS NULL AND backend_xmin IS NULL FROM pg_stat_activity "
        f"WHERE application_name = '{app_name}'",
    )


async def test_probe_on_primary_and_standby(driver: Drv, cluster: LocalCluster) -> None:
    """Values come back as Python bool/int/float/None in column order; no transaction stays open
    (psycopg2's asynchronous connections are always in autocommit mode)."""
    for node, in_recovery in ((cluster.primary, False), (cluster.replicas[0], True)):
        connection = await driver.connect_monitor(node_dsn(node), timeout=5)
        try:
            row = await driver.probe(connection, PROBE_QUERY)
            result = parse_probe_row(row)
            assert row[0] is in_recovery and result.in_recovery is in_recovery
            assert isinstance(row[1], bool) and isinstance(row[2], int)
            if in_recovery:
                assert isinstance(row[3], int) and row[5] == 1
                assert row[4] is None or isinstance(row[4], float)
            else:
                assert row[3] is None and row[4] is None and row[5] == 1
            assert connection.autocommit
            status = connection.raw.get_transaction_status()
            assert status == psycopg2.extensions.TRANSACTION_STATUS_IDLE
            # The server agrees: an idle session holding no snapshot, named as a monitor.
            assert await _activity(cluster, node, "hasql-monitor") == [("idle", "t")]
        finally:
            await driver.close_monitor(connection)
        assert connection.closed
        await driver.close_monitor(connection)  # a second close does nothing


async def test_application_name_of_the_dsn_is_kept(
    driver: Drv, cluster: LocalCluster, app_name: str
) -> None:
    connection = await driver.connect_monitor(
        node_dsn(cluster.primary, application_name=app_name), timeout=5
    )
    try:
        await driver.probe(connection, PROBE_QUERY)
        assert await _activity(cluster, cluster.primary, app_name) == [("idle", "t")]
    finally:
        await driver.close_monitor(connection)
