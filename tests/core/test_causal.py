"""Causal sessions over simulated hosts: reads never older than the session's own writes."""

from __future__ import annotations

import asyncio

import pytest

from hasql_core import ConfigurationError
from hasql_core.causal import CausalToken

from .conftest import wait_for


async def _ready(cluster, make_manager, **kwargs):
    pm = make_manager(cluster, **kwargs)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    return pm


async def _write(session, cluster) -> None:
    async with session.acquire_master() as conn:
        await conn.execute("INSERT 1")
        cluster.write(100)  # the primary's position moves past the session's write


async def test_a_read_after_a_write_goes_to_a_standby_that_replayed_it(cluster, make_manager):
    pm = await _ready(cluster, make_manager, refresh_delay=0.05)
    cluster.hosts[2].stall_replay()  # db2 never replays the write
    session = pm.causal_session()
    await _write(session, cluster)
    cluster.hosts[1].wal_lsn = cluster.hosts[0].wal_lsn  # db1 replays it
    for _ in range(10):
        async with session.acquire_replica() as conn:
            assert await conn.execute("SELECT 1") == "db1:5432"
    assert session.standby_reads == 10 and session.primary_reads == 0


async def test_no_standby_has_it_in_time_then_the_primary_serves_and_it_is_counted(
    cluster, make_manager
):
    pm = await _ready(cluster, make_manager, refresh_delay=0.05)
    session = pm.causal_session(catch_up=0.1)
    await _write(session, cluster)  # no standby replays it
    async with session.acquire_replica() as conn:
        assert await conn.execute("SELECT 1") == "db0:5432"
    assert session.primary_reads == 1
    assert pm.metrics().causal_primary_reads == 1


async def test_plain_reads_and_sessions_without_writes_are_unconstrained(cluster, make_manager):
    pm = await _ready(cluster, make_manager)
    session = pm.causal_session()
    assert session.token is None
    async with session.acquire_replica() as conn:
        assert await conn.execute("SELECT 1") in {"db1:5432", "db2:5432"}


async def test_token_resumes_a_session_and_never_goes_backwards(cluster, make_manager):
    pm = await _ready(cluster, make_manager)
    first = pm.causal_session()
    await _write(first, cluster)
    token = first.token
    assert token is not None and CausalToken.parse(token).lsn == cluster.hosts[0].wal_lsn
    resumed = pm.causal_session(token)
    assert resumed.token == token
    with pytest.raises(ConfigurationError, match="not a causal session token"):
        pm.causal_session("s3cr3t-but-not-a-token")


async def test_causal_scope_routes_plain_acquires(cluster, make_manager):
    pm = await _ready(cluster, make_manager, refresh_delay=0.05)
    with pm.causal_scope(catch_up=0.1) as session:
        async with pm.acquire_master() as conn:
            await conn.execute("INSERT 1")
            cluster.write(100)
        async with pm.acquire_replica() as conn:  # nobody replayed: the primary serves
            assert await conn.execute("SELECT 1") == "db0:5432"
        conn = await pm.acquire_master()
        await pm.release(conn)
    assert session.token is not None and session.primary_reads == 1
    # Outside the scope, plain acquires are plain again.
    async with pm.acquire_replica() as conn:
        assert await conn.execute("SELECT 1") != "db0:5432"


async def test_a_standby_that_catches_up_during_the_wait_serves_the_read(cluster, make_manager):
    pm = await _ready(cluster, make_manager, refresh_delay=30.0)
    session = pm.causal_session(catch_up=5.0)
    await _write(session, cluster)

    def catch_up() -> None:
        cluster.hosts[2].wal_lsn = cluster.hosts[0].wal_lsn

    asyncio.get_running_loop().call_later(0.05, catch_up)
    async with session.acquire_replica() as conn:
        assert await conn.execute("SELECT 1") == "db2:5432"  # found by the fast re-probes


async def test_a_token_lost_in_a_failover_is_served_by_the_new_primary(cluster, make_manager):
    pm = await _ready(cluster, make_manager, refresh_delay=0.05)
    session = pm.causal_session(catch_up=5.0)
    await _write(session, cluster)
    lost = CausalToken.parse(session.token)
    # db1 is promoted without the write: a new timeline whose position is behind the token.
    cluster.hosts[0].down = True
    cluster.hosts[1].wal_lsn = lost.lsn - 50
    cluster.hosts[1].promote()
    cluster.hosts[1].timeline = lost.timeline + 1
    await wait_for(lambda: pm.host_states()[1].role.value == "primary")
    async with session.acquire_replica(timeout=2) as conn:  # no endless wait
        assert await conn.execute("SELECT 1") == "db1:5432"
    new = CausalToken.parse(session.token)
    assert new.timeline == lost.timeline + 1  # re-anchored on the new primary
    assert pm.metrics().causal_tokens_lost == 1  # reported once
