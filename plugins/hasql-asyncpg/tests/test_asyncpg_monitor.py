"""Monitor connections and the probe, on a primary, a standby, a promotion and a frozen host."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import pytest
from asyncpg_helpers import admin_connect, eventually, node_dsn

from hasql_core.driver import Driver
from hasql_core.testing.drivers import PROBE_QUERY, ProbeResult, parse_probe_row

pytestmark = [pytest.mark.timeout(120), pytest.mark.hasql_cluster(replicas=1)]

Drv = Driver[Any, Any, Any]


async def probe(driver: Drv, conn: Any) -> ProbeResult:
    return parse_probe_row(await driver.probe(conn, PROBE_QUERY))


async def test_probe_row_has_plain_python_types(driver: Drv, shared_cluster: Any) -> None:
    conn = await driver.connect_monitor(node_dsn(shared_cluster.replicas[0]), 5)
    try:
        row = await driver.probe(conn, PROBE_QUERY)
        assert isinstance(row, tuple)
        in_recovery, read_only, wal_lsn, receive_lsn, replay_age, timeline = row
        assert type(in_recovery) is bool
        assert type(read_only) is bool
        assert type(wal_lsn) is int
        assert type(receive_lsn) is int
        assert replay_age is None or type(replay_age) is float
        assert type(timeline) is int
    finally:
        await driver.close_monitor(conn)


async def test_probe_primary_and_standby(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection
) -> None:
    primary = await driver.connect_monitor(node_dsn(shared_cluster.primary), 5)
    standby = await driver.connect_monitor(node_dsn(shared_cluster.replicas[0]), 5)
    try:
        p = await probe(driver, primary)
        assert p.in_recovery is False
        assert p.read_only is False
        assert p.wal_lsn is not None and p.wal_lsn > 0
        assert (p.receive_lsn, p.replay_age) == (None, None)
        assert p.timeline == 1

        await admin.execute("CREATE TABLE IF NOT EXISTS hasql_probe_t (id int)")
        await admin.execute("INSERT INTO hasql_probe_t VALUES (1)")
        written = (await probe(driver, primary)).wal_lsn
        assert written is not None and p.wal_lsn is not None and written > p.wal_lsn

        # The standby replays up to the primary's position; probes see it move.
        s = await eventually(
            lambda: probe(driver, standby),
            lambda state: state.wal_lsn is not None and state.wal_lsn >= written,
        )
        assert s.in_recovery is True
        assert s.read_only is True
        assert s.receive_lsn is not None and s.receive_lsn >= written
        assert s.replay_age is not None and s.replay_age >= 0
        assert s.timeline == 1
    finally:
        await driver.close_monitor(primary)
        await driver.close_monitor(standby)


async def test_monitor_connection_never_sits_in_a_transaction(
    driver: Drv, shared_cluster: Any, admin: asyncpg.Connection
) -> None:
    conn = await driver.connect_monitor(node_dsn(shared_cluster.primary), 5)
    try:
        pid = conn.get_server_pid()
        await driver.probe(conn, PROBE_QUERY)
        state = await admin.fetchval("SELECT state FROM pg_stat_activity WHERE pid = $1", pid)
        assert state == "idle"
    finally:
        await driver.close_monitor(conn)
    # close_monitor ends the session without a goodbye; the server notices the closed socket.
    assert conn.is_closed()
    await eventually(
        lambda: admin.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid),
        lambda count: count == 0,
    )


async def test_paused_replay_shows_receive_ahead_of_replay(driver: Drv, hasql_cluster: Any) -> None:
    replica = hasql_cluster.replicas[0]
    conn = await driver.connect_monitor(node_dsn(replica), 5)
    admin = await admin_connect(hasql_cluster.primary)
    try:
        hasql_cluster.pause_replay(replica)
        await admin.execute(
            "CREATE TABLE hasql_paused (id int); INSERT INTO hasql_paused VALUES (1)"
        )
        written = await admin.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint")
        state = await eventually(
            lambda: probe(driver, conn),
            lambda s: s.receive_lsn is not None and s.receive_lsn >= written,
        )
        assert state.wal_lsn is not None and state.wal_lsn < written  # replay stands still
        hasql_cluster.resume_replay(replica)
        await eventually(
            lambda: probe(driver, conn), lambda s: s.wal_lsn is not None and s.wal_lsn >= written
        )
    finally:
        await admin.close()
        await driver.close_monitor(conn)


async def test_probe_sees_a_promotion_on_the_same_connection(
    driver: Drv, hasql_cluster: Any
) -> None:
    old_primary, replica = hasql_cluster.primary, hasql_cluster.replicas[0]
    on_old = await driver.connect_monitor(node_dsn(old_primary), 5)
    on_replica = await driver.connect_monitor(node_dsn(replica), 5)
    try:
        before = await probe(driver, on_replica)
        assert (before.in_recovery, before.timeline) == (True, 1)

        hasql_cluster.promote(replica)

        after = await eventually(
            lambda: probe(driver, on_replica),
            lambda state: not state.in_recovery and state.timeline == 2,
        )
        assert after.read_only is False
        assert after.receive_lsn is None
        assert after.wal_lsn is not None and before.wal_lsn is not None
        assert after.wal_lsn >= before.wal_lsn
        # The old primary still believes it is the primary, on the old timeline.
        old = await probe(driver, on_old)
        assert (old.in_recovery, old.timeline) == (False, 1)
    finally:
        await driver.close_monitor(on_old)
        await driver.close_monitor(on_replica)


async def test_connect_to_a_frozen_host_times_out_within_the_timeout(
    driver: Drv, hasql_cluster: Any
) -> None:
    replica = hasql_cluster.replicas[0]
    dsn = node_dsn(replica)
    established = await driver.connect_monitor(dsn, 5)
    hasql_cluster.freeze(replica)
    try:
        timeout = 0.5
        started = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await driver.connect_monitor(dsn, timeout)
        elapsed = time.monotonic() - started
        assert elapsed < timeout + 1.0, f"connect_monitor took {elapsed:.2f}s"

        # A probe on an established connection hangs; the core bounds it and then closes the
        # connection, which must not wait on the frozen server.
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.probe(established, PROBE_QUERY), 0.3)
        started = time.monotonic()
        await asyncio.wait_for(driver.close_monitor(established), 1.0)
        assert established.is_closed()
        assert time.monotonic() - started < 1.0
    finally:
        hasql_cluster.thaw(replica)
        await driver.close_monitor(established)

    # Once thawed, the host answers again.
    conn = await driver.connect_monitor(dsn, 5)
    try:
        assert (await probe(driver, conn)).in_recovery is True
    finally:
        await driver.close_monitor(conn)


async def test_probe_on_a_killed_host_is_connection_lost(driver: Drv, hasql_cluster: Any) -> None:
    replica = hasql_cluster.replicas[0]
    conn = await driver.connect_monitor(node_dsn(replica), 5)
    try:
        hasql_cluster.kill(replica)  # the backends exit once they see the postmaster gone

        async def probe_error() -> BaseException | None:
            try:
                await asyncio.wait_for(driver.probe(conn, PROBE_QUERY), 5)
            except Exception as error:
                return error
            return None

        error = await eventually(probe_error, lambda found: found is not None)
        assert error is not None
        assert driver.classify_error(error).value in ("connection_lost", "unavailable"), repr(error)
    finally:
        await driver.close_monitor(conn)
