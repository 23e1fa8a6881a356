"""Roles, failover, hung hosts, lag and split brain, through the manager over the fake driver."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hasql_core import AcquireTimeoutError, Role, SplitBrainError
from hasql_core.testing.fake_driver import FakeCluster, FakeConnection

from .conftest import wait_for


async def served_by(pm, *, read_only: bool, **kwargs) -> str:
    async with pm.acquire(read_only=read_only, **kwargs) as conn:
        assert isinstance(conn, FakeConnection)
        return await conn.execute("SELECT 1")


async def test_roles_are_found(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    roles = {s.host: s.role for s in pm.host_states()}
    assert roles == {"db0": Role.PRIMARY, "db1": Role.STANDBY, "db2": Role.STANDBY}
    assert await served_by(pm, read_only=False) == "db0:5432"
    reads = {await served_by(pm, read_only=True) for _ in range(50)}
    assert reads == {"db1:5432", "db2:5432"}
    assert pm.master_pool_count == 1 and pm.replica_pool_count == 2
    assert pm.available_pool_count == 3 and len(list(pm)) == 3


async def test_failover_is_followed_by_fast_probing(cluster, make_manager):
    # A refresh_delay far longer than the test: only fast probing while a write waits can find
    # the new primary in time.
    pm = make_manager(cluster, refresh_delay=60.0, acquire_timeout=10.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[0].down = True
    # The first write after the crash fails; the manager re-probes db0 and finds it gone.
    with pytest.raises(ConnectionError):
        async with pm.acquire_master() as conn:
            await conn.execute("INSERT 1")
    await wait_for(lambda: pm.host_states()[0].role is Role.UNAVAILABLE)
    writer = asyncio.ensure_future(served_by(pm, read_only=False))
    await wait_for(lambda: pm.metrics().waiting_acquires > 0)
    probes_before = cluster.hosts[1].probes
    cluster.hosts[1].promote()
    assert await asyncio.wait_for(writer, 5) == "db1:5432"
    # Found by the next probe or two of the promoted host, not after refresh_delay.
    assert cluster.hosts[1].probes - probes_before <= 2
    # Reads keep working from the remaining standby.
    assert await served_by(pm, read_only=True) == "db2:5432"


async def test_hung_host_marked_unavailable_within_delay_plus_timeout(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=0.2, refresh_timeout=0.3)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    loop = asyncio.get_running_loop()
    cluster.hosts[2].freeze()
    frozen_at = loop.time()
    await wait_for(lambda: pm.host_states()[2].role is Role.UNAVAILABLE, timeout=5)
    # Behavioural bound with slack for a loaded machine: delay + timeout + one more cycle.
    assert loop.time() - frozen_at < 0.2 + 0.3 + 0.5
    assert "probe took longer than 0.3s" in (pm.host_states()[2].last_error or "")
    reads = {await served_by(pm, read_only=True) for _ in range(20)}
    assert reads == {"db1:5432"}
    cluster.hosts[2].thaw()
    await wait_for(lambda: pm.host_states()[2].role is Role.STANDBY)


async def test_lagging_replica_is_excluded_and_readmitted(cluster, make_manager):
    pm = make_manager(cluster, max_lag_bytes=1000)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    lagging = cluster.hosts[2]
    cluster.write(5000)
    cluster.hosts[1].wal_lsn = cluster.hosts[1].receive_lsn = cluster.hosts[0].wal_lsn
    # db2 stalls: it neither receives nor replays, but the primary moved on.
    lagging.replay_age = 30.0
    await wait_for(lambda: pm.host_states()[2].stale)
    assert pm.host_states()[2].lag_bytes == 5000
    assert {await served_by(pm, read_only=True) for _ in range(20)} == {"db1:5432"}
    # A per-acquire limit overrides the manager's.
    got = {await served_by(pm, read_only=True, max_lag_bytes=10_000) for _ in range(30)}
    assert got == {"db1:5432", "db2:5432"}
    cluster.replicate()
    await wait_for(lambda: not pm.host_states()[2].stale)
    assert {await served_by(pm, read_only=True) for _ in range(30)} == {"db1:5432", "db2:5432"}


async def test_lag_in_seconds_limit(cluster, make_manager):
    pm = make_manager(cluster, max_lag=1.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.write(100)
    cluster.hosts[1].wal_lsn = cluster.hosts[1].receive_lsn = cluster.hosts[0].wal_lsn
    cluster.hosts[2].replay_age = 5.0
    await wait_for(lambda: pm.host_states()[2].stale)
    assert pm.host_states()[2].lag_seconds == 5.0
    assert pm.host_states()[1].lag_seconds == 0.0


async def test_no_fresh_replica_fallback_master_decides(cluster, make_manager):
    cluster.hosts[1].down = cluster.hosts[2].down = True
    pm = make_manager(cluster, acquire_timeout=0.3)
    await pm.ready(masters_count=1, replicas_count=0, timeout=5)
    assert await served_by(pm, read_only=True, fallback_master=True) == "db0:5432"
    with pytest.raises(AcquireTimeoutError) as info:
        await served_by(pm, read_only=True)
    message = str(info.value)
    assert "a connection to a replica" in message and "db1:5432 unavailable" in message
    assert isinstance(info.value, asyncio.TimeoutError)


async def test_split_brain_resolved_by_timeline(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[1].promote()  # timeline 2, while db0 still claims primary on timeline 1
    await wait_for(lambda: pm.host_states()[0].split_brain)
    assert {await served_by(pm, read_only=False) for _ in range(20)} == {"db1:5432"}
    assert pm.host_states()[1].writable and not pm.host_states()[0].writable


async def test_split_brain_tie_refuses_writes(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[1].role = "primary"  # same timeline as db0
    await wait_for(lambda: pm.host_states()[1].role is Role.PRIMARY)
    with pytest.raises(SplitBrainError, match="same timeline") as info:
        await served_by(pm, read_only=False)
    assert "db0:5432" in str(info.value) and "db1:5432" in str(info.value)


async def test_demoted_primary_is_reprobed_and_not_reused_for_writes(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=60.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    first = await pm.acquire_master()
    await pm.release(first)  # an idle connection to db0 now sits in its pool
    cluster.hosts[0].demote()
    cluster.hosts[1].promote()
    # The write fails with a read-only violation: that alone triggers an immediate re-probe.
    with pytest.raises(Exception, match="read-only"):
        async with pm.acquire_master() as conn:
            await conn.execute("INSERT 1")
    await wait_for(lambda: pm.host_states()[0].role is Role.STANDBY, timeout=2)
    assert await served_by(pm, read_only=False) == "db1:5432"
    # Its idle connections were dropped, so none of them is handed out again.
    await wait_for(lambda: first.closed)
    assert first not in pm.driver.pools[0].idle


async def test_all_hosts_down_then_back(cluster, make_manager):
    pm = make_manager(cluster, acquire_timeout=0.3)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    for host in cluster.hosts:
        host.down = True
    await wait_for(lambda: not any(s.available for s in pm.host_states()))
    with pytest.raises(AcquireTimeoutError, match="primary"):
        await served_by(pm, read_only=False)
    for host in cluster.hosts:
        host.down = False
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    assert await served_by(pm, read_only=False) == "db0:5432"


async def test_read_only_primary_is_still_the_primary(cluster, make_manager):
    cluster.hosts[0].read_only = True
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    state = pm.host_states()[0]
    assert state.role is Role.PRIMARY and state.read_only
    assert await served_by(pm, read_only=False) == "db0:5432"


async def test_master_as_replica_weight(cluster, make_manager):
    pm = make_manager(cluster, balancer_policy="round_robin")
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    never = {await served_by(pm, read_only=True, master_as_replica_weight=0.0) for _ in range(40)}
    assert "db0:5432" not in never
    always = [await served_by(pm, read_only=True, master_as_replica_weight=1.0) for _ in range(300)]
    # With weight 1 the primary is always one of three candidates: about a third of the reads.
    assert 60 < always.count("db0:5432") < 140
    half = [await served_by(pm, read_only=True, master_as_replica_weight=0.5) for _ in range(600)]
    # Joins half of the time, then gets one in three of those: about 1/6.
    assert 50 < half.count("db0:5432") < 160


async def test_connection_lost_on_acquire_tries_another_host(make_manager):
    cluster = FakeCluster(3)
    pm = make_manager(cluster, refresh_delay=60.0, pool_factory_kwargs={"min_size": 0})
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[1].fail_next(1)  # the next connect to db1 fails
    got = {await served_by(pm, read_only=True) for _ in range(10)}
    assert "db2:5432" in got
    assert pm.metrics().hosts[1].errors.get("connection_lost") == 1


async def test_host_blamed_by_a_failed_connection_gets_nothing_until_reprobed(
    cluster, make_manager
):
    pm = make_manager(cluster, refresh_delay=60.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[0].demote()
    cluster.hosts[1].promote()
    cluster.hosts[0].latency = 0.3  # the re-probe of db0 takes a while
    with pytest.raises(Exception, match="read-only"):
        async with pm.acquire_master() as conn:
            await conn.execute("INSERT 1")
    # db0 still reads as primary until its slow re-probe ends, but it is held back meanwhile:
    # the next write waits for the fast probes and lands on the new primary without failing.
    assert pm.host_states()[0].role is Role.PRIMARY
    async with pm.acquire_master() as conn:
        assert await conn.execute("INSERT 2") == "db1:5432"


async def test_frozen_primary_is_held_back_after_a_slow_probe(cluster, make_manager):
    # refresh_timeout is far beyond the test: only the slow-probe suspicion can move the writes
    # to the promoted replica before the frozen primary's probe times out.
    pm = make_manager(cluster, refresh_delay=0.1, refresh_timeout=60.0, acquire_timeout=5.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[0].freeze()
    await wait_for(lambda: pm.metrics().hosts[0].held_back, timeout=3)
    assert pm.host_states()[0].role is Role.PRIMARY  # not yet found unavailable
    cluster.hosts[1].promote()
    assert await served_by(pm, read_only=False) == "db1:5432"
    assert await served_by(pm, read_only=True) == "db2:5432"
    cluster.hosts[0].thaw()  # its probe answers: no longer suspect, but a split-brain loser now
    await wait_for(lambda: pm.host_states()[0].split_brain)


async def test_a_slow_but_healthy_probe_only_delays_acquires(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=0.05, refresh_timeout=5.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[0].latency = 0.3  # probes (and queries) now take 0.3 s
    await wait_for(lambda: pm.metrics().hosts[0].held_back, timeout=3)
    assert await served_by(pm, read_only=False) == "db0:5432"  # waited, did not fail
    assert pm.host_states()[0].role is Role.PRIMARY


async def test_stalled_replica_is_probed_again_before_it_crosses_the_lag_limit(
    cluster, make_manager
):
    # refresh_delay is far beyond the test: the replica must still be seen stale right after it
    # crosses max_lag, because a standby that is behind is re-probed when it could cross it.
    pm = make_manager(cluster, refresh_delay=30.0, max_lag=0.3)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.write(1000)
    stalled = cluster.hosts[2]
    stalled.receive_lsn = cluster.hosts[0].wal_lsn  # received, not replayed
    stalled.stall_replay()
    pm.refresh(pm.host_states()[2].name)
    await wait_for(lambda: pm.host_states()[2].stale, timeout=3)
    # Marked stale by the timer at the predicted crossing (its last measured lag may be below
    # the limit): what matters is that it is stale and never served.
    assert (pm.host_states()[2].lag_bytes or 0) > 0
    assert {await served_by(pm, read_only=True) for _ in range(20)} == {"db1:5432"}


async def test_a_host_whose_pool_opens_late_becomes_a_candidate(make_manager):
    cluster = FakeCluster(2)
    # The first pool opening fails (the monitor's connect and probe succeed, then the pool's
    # connect fails); the host keeps its role, and must still become usable once a pool opens.
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1})
    original = pm.driver.open_pool
    failures = {"db1": 1}

    async def flaky_open(pool):
        if failures.get(pool.host.host):
            failures[pool.host.host] -= 1
            raise ConnectionError("pool connect failed")
        await original(pool)

    pm.driver.open_pool = flaky_open
    await pm.ready(masters_count=1, replicas_count=1, timeout=5)
    assert await served_by(pm, read_only=True) == "db1:5432"
    assert pm.metrics().hosts[1].errors == {"pool_open_error": 1}


async def _replay_ages_served(pm: Any, stalled: Any, seconds: float) -> list[float]:
    """Read every 5 ms for ``seconds``; the replay age of ``stalled`` at each read it served."""
    ages_served: list[float] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        async with pm.acquire_replica() as conn:
            if conn.host is stalled:
                ages_served.append(stalled.current_replay_age() or 0.0)
        await asyncio.sleep(0.005)
    return ages_served


async def test_no_read_goes_to_a_replica_older_than_max_lag(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=30.0, max_lag=0.3, balancer_policy="round_robin")
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.write(1000)
    stalled = cluster.hosts[2]
    stalled.receive_lsn = cluster.hosts[0].wal_lsn
    stalled.stall_replay()
    pm.refresh(pm.host_states()[2].name)
    ages_served = await _replay_ages_served(pm, stalled, 1.0)
    assert ages_served, "the stalled replica should serve reads until it nears the limit"
    assert max(ages_served) <= 0.3 + 0.05  # timer slack on a busy machine, not a lag allowance
    assert pm.host_states()[2].stale


async def test_the_lag_limit_counts_from_when_the_probe_was_sent(cluster, make_manager):
    # The standby measures its replay age when the probe reaches it; the answer arrives 0.1 s
    # later. Counting the crossing from the answer's arrival would serve reads up to 0.1 s
    # beyond max_lag.
    pm = make_manager(cluster, refresh_delay=30.0, max_lag=0.5, balancer_policy="round_robin")
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.write(1000)
    stalled = cluster.hosts[2]
    stalled.reply_delay = 0.1
    stalled.receive_lsn = cluster.hosts[0].wal_lsn
    stalled.stall_replay()
    pm.refresh(pm.host_states()[2].name)
    ages_served = await _replay_ages_served(pm, stalled, 1.5)
    assert ages_served, "the stalled replica should serve reads until it nears the limit"
    assert max(ages_served) <= 0.5
    assert pm.host_states()[2].stale


async def test_a_connection_released_closed_makes_its_host_reprobed(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=60.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    conn = await pm.acquire_master()
    probes = cluster.hosts[0].probes
    conn.close()  # e.g. the server ended the session while the caller held it
    await pm.release(conn)
    assert pm.metrics().hosts[0].errors == {"connection_lost": 1}
    await wait_for(lambda: cluster.hosts[0].probes > probes, timeout=2)


async def test_greedy_spreads_held_reads_by_the_connections_the_manager_handed_out(
    cluster, make_manager
):
    # Pools of 2 per host, 4 reads held at once: greedy sees each host's free capacity drop as
    # the manager hands connections out, so each standby serves exactly 2 and none waits.
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 2, "max_size": 2})
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    held = [await pm.acquire_replica(timeout=0.5) for _ in range(4)]
    try:
        hosts = sorted(conn.host.name for conn in held)
        assert hosts == ["db1:5432", "db1:5432", "db2:5432", "db2:5432"]
    finally:
        for conn in held:
            await pm.release(conn)
    # Given back, the capacity is free again: two more reads land on different hosts.
    first, second = await pm.acquire_replica(), await pm.acquire_replica()
    try:
        assert first.host is not second.host
    finally:
        await pm.release(first)
        await pm.release(second)


async def test_greedy_sends_waiting_reads_to_the_shortest_queue(cluster, make_manager):
    # Pools of 1 per host. Two reads hold both standbys' connections; four more must wait. Each
    # waiting read counts against its host, so greedy splits them 2 and 2 (random picks would
    # often queue 3 or 4 behind one host).
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1, "max_size": 1})
    pm.enable_acquire_stats()  # its "pending" figure shows when all four reads wait
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    held = [await pm.acquire_replica() for _ in range(2)]
    assert sorted(conn.host.name for conn in held) == ["db1:5432", "db2:5432"]
    served: list[str] = []

    async def read() -> None:
        async with pm.acquire_replica(timeout=5) as conn:
            served.append(conn.host.name)

    waiting = [asyncio.ensure_future(read()) for _ in range(4)]

    def pending() -> int:
        stats = pm.acquire_stats()
        assert stats is not None
        return sum(host.pending for host in stats.hosts)

    await wait_for(lambda: pending() == 4)
    for conn in held:
        await pm.release(conn)
    await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert sorted(served) == ["db1:5432", "db1:5432", "db2:5432", "db2:5432"]
