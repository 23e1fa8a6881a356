"""Causal sessions on real clusters: a write-then-read loop never misses its own write, with replay
paused on one standby, on both, and across a failover; a token is honoured by another process."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from asyncpg_helpers import DRIVER_NAME

from hasql_core import PoolManager

pytestmark = [pytest.mark.timeout(240), pytest.mark.hasql_cluster(replicas=2)]

BOUND = 5.0  # the client-side bound of every statement


def _manager(cluster: Any, **kwargs: Any) -> PoolManager:
    return PoolManager(
        cluster.dsn,
        driver=DRIVER_NAME,
        refresh_delay=0.2,
        refresh_timeout=1.0,
        acquire_timeout=5.0,
        pool_factory_kwargs={"min_size": 1, "max_size": 4},
        **kwargs,
    )


async def _setup(pm: PoolManager) -> None:
    await pm.ready(masters_count=1, replicas_count=2, timeout=30)
    async with pm.acquire_master() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS rw (id bigint PRIMARY KEY)")


async def _write_then_read(session: Any, row: int) -> int:
    """Write ``row`` through the session, read it back through it; return the reading server's port."""
    async with session.acquire_master() as conn:
        await asyncio.wait_for(conn.execute("INSERT INTO rw VALUES ($1)", row), BOUND)
    async with session.acquire_replica() as conn:
        found = await asyncio.wait_for(
            conn.fetchval("SELECT count(*) FROM rw WHERE id = $1", row), BOUND
        )
        port = await asyncio.wait_for(conn.fetchval("SELECT inet_server_port()"), BOUND)
    assert found == 1, f"read from port {port} missed the session's own write {row}"
    return int(port)


async def test_one_standby_paused_reads_go_to_the_other(hasql_cluster: Any) -> None:
    cluster = hasql_cluster
    pm = _manager(cluster)
    try:
        await _setup(pm)
        paused, live = cluster.replicas
        cluster.pause_replay(paused)
        session = pm.causal_session(catch_up=1.0)
        ports = [await _write_then_read(session, row) for row in range(1, 21)]
        assert paused.port not in ports
        assert ports.count(live.port) >= 15  # the rest only while live had not caught up in time
        cluster.resume_replay(paused)
    finally:
        await pm.close()


async def test_both_standbys_paused_reads_go_to_the_primary(hasql_cluster: Any) -> None:
    cluster = hasql_cluster
    pm = _manager(cluster)
    try:
        await _setup(pm)
        for replica in cluster.replicas:
            cluster.pause_replay(replica)
        session = pm.causal_session(catch_up=0.1)
        ports = [await _write_then_read(session, row) for row in range(100, 110)]
        assert set(ports) == {cluster.primary.port}
        assert session.primary_reads == 10
        # Plain reads are not constrained: they keep going to the (stale) standbys.
        async with pm.acquire_replica() as conn:
            assert await conn.fetchval("SELECT pg_is_in_recovery()") is True
        for replica in cluster.replicas:
            cluster.resume_replay(replica)
    finally:
        await pm.close()


async def test_no_stale_read_and_no_endless_wait_across_a_failover(hasql_cluster: Any) -> None:
    cluster = hasql_cluster
    pm = _manager(cluster)
    try:
        await _setup(pm)
        session = pm.causal_session(catch_up=0.5)
        row = 1000
        for _ in range(5):
            await _write_then_read(session, row)
            row += 1
        old_token = session.token
        cluster.wait_replayed()
        promoted = cluster.replicas[0]
        await asyncio.to_thread(cluster.kill, cluster.primary)
        await asyncio.to_thread(cluster.promote, promoted)
        new_primary = promoted.port
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # failed attempts are fine while the failover runs
            try:
                async with session.acquire_master() as conn:
                    if await conn.fetchval("SELECT inet_server_port()") == new_primary:
                        break
            except Exception:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("writes never reached the promoted replica")
        for _ in range(5):
            started = time.monotonic()
            await _write_then_read(session, row)
            assert time.monotonic() - started < 2 * (5.0 + BOUND)  # never past its deadlines
            row += 1
        assert session.token != old_token
    finally:
        await pm.close()


async def test_a_token_is_honoured_by_another_process(hasql_cluster: Any) -> None:
    cluster = hasql_cluster
    pm = _manager(cluster)
    try:
        await _setup(pm)
        for replica in cluster.replicas:
            cluster.pause_replay(replica)
        session = pm.causal_session()
        async with session.acquire_master() as conn:
            await conn.execute("INSERT INTO rw VALUES (424242)")
        token = session.token
        assert token is not None
    finally:
        await pm.close()
    script = textwrap.dedent(
        f"""
        import asyncio, sys
        from hasql_core import PoolManager

        async def main():
            async with PoolManager(sys.argv[1], driver={DRIVER_NAME!r}) as pm:
                await pm.ready(masters_count=1, replicas_count=2, timeout=30)
                session = pm.causal_session(sys.argv[2], catch_up=0.2)
                async with session.acquire_replica() as conn:
                    print(await conn.fetchval("SELECT count(*) FROM rw WHERE id = 424242"))

        asyncio.run(main())
        """
    )
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, cluster.dsn, token],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "1"  # the primary served it: both standbys are paused
    for replica in cluster.replicas:
        cluster.resume_replay(replica)
