"""The psycopg3 driver's monitor connection on a real cluster: probes, promotion, hung hosts."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from hasql_psycopg3.driver import MONITOR_APPLICATION_NAME, PsycopgDriver
from psycopg3_helpers import backends, client_sockets, node_dsn, shut

from hasql_core.testing.cluster import LocalCluster
from hasql_core.testing.drivers import PROBE_QUERY, parse_probe_row

IDLE = psycopg.pq.TransactionStatus.IDLE

pytestmark = pytest.mark.timeout(120)


async def test_probe_on_primary_and_standby(cluster: LocalCluster, driver: PsycopgDriver) -> None:
    primary = await driver.connect_monitor(node_dsn(cluster.primary), 5.0)
    standby = await driver.connect_monitor(node_dsn(cluster.replicas[0]), 5.0)
    try:
        assert primary.autocommit is True
        assert standby.autocommit is True
        # One write so the standby has replayed a transaction (replay_age is then a number).
        await asyncio.to_thread(cluster.execute, cluster.primary, "SELECT txid_current()")
        await asyncio.to_thread(cluster.wait_replayed)

        row = await driver.probe(primary, PROBE_QUERY)
        assert isinstance(row, tuple)
        assert [type(value) for value in row] == [bool, bool, int, type(None), type(None), int]
        result = parse_probe_row(row)
        assert (result.in_recovery, result.read_only) == (False, False)
        assert result.wal_lsn is not None
        assert result.wal_lsn > 0
        assert result.timeline == 1

        result = parse_probe_row(await driver.probe(standby, PROBE_QUERY))
        assert (result.in_recovery, result.read_only) == (True, True)
        assert result.wal_lsn is not None
        assert result.receive_lsn is not None
        assert result.receive_lsn >= result.wal_lsn > 0
        assert isinstance(result.replay_age, float)
        assert result.replay_age >= 0.0
        assert result.timeline == 1

        # A probe never leaves a transaction open.
        assert primary.info.transaction_status == IDLE
        assert standby.info.transaction_status == IDLE
    finally:
        await driver.close_monitor(primary)
        await driver.close_monitor(standby)
    assert primary.closed
    assert standby.closed


@pytest.mark.hasql_cluster(replicas=1)
async def test_promotion_is_seen_at_once_on_the_same_monitor_connection(
    hasql_cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    """hasql 0.9 probed without autocommit and kept seeing a read-only standby after a promotion."""
    replica = hasql_cluster.replicas[0]
    monitor = await driver.connect_monitor(node_dsn(replica), 5.0)
    try:
        before = parse_probe_row(await driver.probe(monitor, PROBE_QUERY))
        assert (before.in_recovery, before.read_only, before.timeline) == (True, True, 1)

        await asyncio.to_thread(hasql_cluster.promote, replica)  # returns once out of recovery

        after = parse_probe_row(await driver.probe(monitor, PROBE_QUERY))
        assert (after.in_recovery, after.read_only) == (False, False)
        assert after.timeline == 2
        assert after.receive_lsn is None
        assert monitor.info.transaction_status == IDLE
    finally:
        await driver.close_monitor(monitor)


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


async def test_monitor_reaches_a_standby_whatever_target_session_attrs_says(
    cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    dsn = node_dsn(cluster.replicas[0], target_session_attrs="read-write")
    monitor = await driver.connect_monitor(dsn, 5.0)
    try:
        assert parse_probe_row(await driver.probe(monitor, PROBE_QUERY)).in_recovery
    finally:
        await driver.close_monitor(monitor)
    pool = driver.create_pool(dsn, {"min_size": 1})
    try:
        await driver.open_pool(pool)
        conn = await driver.acquire(pool, 5.0)
        await driver.release(pool, conn)
    finally:
        await shut(driver, pool)


@pytest.mark.hasql_cluster(replicas=1)
async def test_monitor_connect_to_a_frozen_host_is_bounded_by_the_timeout(
    hasql_cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    node = hasql_cluster.replicas[0]
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await driver.connect_monitor(node_dsn(node), 0.5)
        assert 0.4 < time.monotonic() - started < 1.5
        assert client_sockets(node.port) == 0

        # Cancelled from outside (as the core does on its deadline) it returns at once too.
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.connect_monitor(node_dsn(node), 30.0), 0.3)
        assert time.monotonic() - started < 1.0
        assert client_sockets(node.port) == 0
    finally:
        await asyncio.to_thread(hasql_cluster.thaw, node)


@pytest.mark.hasql_cluster(replicas=1)
async def test_cancelled_probe_on_a_frozen_host_returns_at_once(
    hasql_cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    """psycopg alone would try to cancel the query on the hung server for about ten seconds."""
    node = hasql_cluster.replicas[0]
    monitor = await driver.connect_monitor(node_dsn(node), 5.0)
    await driver.probe(monitor, PROBE_QUERY)
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.probe(monitor, PROBE_QUERY), 0.3)
        assert time.monotonic() - started < 1.0
        started = time.monotonic()
        await driver.close_monitor(monitor)
        assert time.monotonic() - started < 0.5
        assert monitor.closed
        assert client_sockets(node.port) == 0
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    finally:
        await asyncio.to_thread(hasql_cluster.thaw, node)


@pytest.mark.hasql_cluster(replicas=1)
async def test_probe_of_a_dead_server_fails(
    hasql_cluster: LocalCluster, driver: PsycopgDriver
) -> None:
    node = hasql_cluster.replicas[0]
    monitor = await driver.connect_monitor(node_dsn(node), 5.0)
    try:
        await asyncio.to_thread(hasql_cluster.stop, node, "immediate")
        with pytest.raises(psycopg.OperationalError) as info:
            await asyncio.wait_for(driver.probe(monitor, PROBE_QUERY), 5.0)
        assert driver.classify_error(info.value).value in ("connection_lost", "unavailable")
        assert driver.is_connection_closed(monitor)
    finally:
        await driver.close_monitor(monitor)
    with pytest.raises(psycopg.OperationalError) as refused:
        await driver.connect_monitor(node_dsn(node), 2.0)
    assert driver.classify_error(refused.value).value == "connection_lost"
