"""Arguments, closing, cancellation and the hasql-compatible API of PoolManager."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
import textwrap

import pytest

from hasql_core import (
    ConfigurationError,
    PoolManager,
    PoolManagerClosedError,
    ReadyTimeoutError,
    Role,
)
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

from .conftest import wait_for


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"master_as_replica_weight": 1.5}, "within \\[0, 1\\]"),
        ({"master_as_replica_weight": -0.1}, "within \\[0, 1\\]"),
        ({"acquire_timeout": 0}, "acquire_timeout must be a positive"),
        ({"refresh_delay": -1}, "refresh_delay must be a positive"),
        ({"refresh_timeout": "2"}, "refresh_timeout must be a positive"),
        ({"stopwatch_window_size": 0}, "stopwatch_window_size"),
        ({"pool_factory_kwargs": [("min_size", 1)]}, "pool_factory_kwargs must be a mapping"),
        ({"max_lag": -1}, "max_lag must be a non-negative"),
        ({"max_lag_bytes": 1.5}, "max_lag_bytes must be a non-negative integer"),
    ],
)
def test_constructor_argument_errors(kwargs, message):
    cluster = FakeCluster(2)
    with pytest.raises(ConfigurationError, match=message):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), **kwargs)


async def test_acquire_argument_errors(cluster, make_manager):
    pm = make_manager(cluster)
    with pytest.raises(ConfigurationError, match="reads only"):
        pm.acquire(read_only=False, master_as_replica_weight=0.5)
    with pytest.raises(ConfigurationError, match="within \\[0, 1\\]"):
        pm.acquire_replica(master_as_replica_weight=2)
    with pytest.raises(ConfigurationError, match="reads only"):
        pm.acquire(read_only=False, max_lag=1)
    with pytest.raises(ConfigurationError, match="timeout must be a positive"):
        pm.acquire_master(timeout=-1)


async def test_ready_argument_errors(cluster, make_manager):
    pm = make_manager(cluster)
    with pytest.raises(ConfigurationError, match="together, or neither"):
        await pm.ready(masters_count=1)
    with pytest.raises(ConfigurationError, match="together, or neither"):
        await pm.ready(replicas_count=1)
    with pytest.raises(ConfigurationError, match="masters_count must not be negative"):
        await pm.ready(masters_count=-1, replicas_count=0)
    with pytest.raises(ConfigurationError, match="replicas_count must not be negative"):
        await pm.ready(masters_count=0, replicas_count=-1)


async def test_ready_timeout_describes_hosts(make_manager):
    cluster = FakeCluster(2, primary=None)
    pm = make_manager(cluster)
    with pytest.raises(ReadyTimeoutError, match="1 primary") as info:
        await pm.ready(masters_count=1, replicas_count=1, timeout=0.3)
    assert "db0:5432 standby" in str(info.value)
    assert isinstance(info.value, asyncio.TimeoutError)
    await pm.ready(timeout=2)  # all hosts are up, as standbys


async def test_pool_factory_kwargs_not_mutated_and_sizes_exact(cluster, make_manager):
    options = {"min_size": 2, "max_size": 3}
    pm = make_manager(cluster, pool_factory_kwargs=options)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    assert options == {"min_size": 2, "max_size": 3}
    pools = pm.driver.pools
    assert [(p.min_size, p.max_size) for p in pools] == [(2, 3)] * 3
    # Pools hold exactly min_size connections; the monitor's connection is separate (one per host).
    assert [len(p.idle) for p in pools] == [2, 2, 2]
    assert [h.open_connections for h in cluster.hosts] == [3, 3, 3]
    held = [await pm.acquire_master() for _ in range(3)]
    assert pm.get_pool_freesize(pools[0]) == 0
    with pytest.raises(asyncio.TimeoutError, match="free connection in the pool of db0:5432"):
        await pm.acquire_master(timeout=0.1)
    for conn in held:
        await pm.release(conn)


async def test_use_after_close(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    await pm.close()
    assert pm.closed and not pm.closing
    with pytest.raises(PoolManagerClosedError, match="closed"):
        await pm.acquire_master()
    with pytest.raises(PoolManagerClosedError):
        await pm.ready()
    with pytest.raises(PoolManagerClosedError):
        await pm.get_pool()
    await pm.close()  # idempotent
    assert cluster.open_connections == 0


async def test_close_waits_for_handed_out_connections(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    conn = await pm.acquire_master()
    closing = asyncio.ensure_future(pm.close(timeout=5))
    await wait_for(lambda: pm.closing)
    assert not closing.done()
    with pytest.raises(PoolManagerClosedError):
        await pm.acquire_replica()
    await pm.release(conn)
    await asyncio.wait_for(closing, 5)
    assert pm.closed and cluster.open_connections == 0


async def test_close_terminates_connections_not_returned_in_time(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    conn = await pm.acquire_master()
    await pm.close(timeout=0.1)
    assert conn.closed and cluster.open_connections == 0


async def test_waiting_acquire_is_woken_by_close(make_manager):
    cluster = FakeCluster(2, primary=None)
    pm = make_manager(cluster, acquire_timeout=30)
    waiting = asyncio.ensure_future(pm.acquire_master())
    await wait_for(lambda: pm.metrics().waiting_acquires == 1)
    await pm.close()
    with pytest.raises(PoolManagerClosedError):
        await waiting


async def test_hosts_that_never_answer_do_not_block_close(make_manager):
    cluster = FakeCluster(3)
    for host in cluster.hosts:
        host.freeze()
    pm = make_manager(cluster, refresh_timeout=30)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(pm.close(), 10)
    assert loop.time() - started < 5
    assert pm.closed


async def test_terminate_closes_handed_out_connections(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    held = [await pm.acquire_master(), await pm.acquire_replica()]
    await pm.terminate()
    assert all(c.closed for c in held)
    assert cluster.open_connections == 0


async def test_cancellation_storm_leaks_nothing(cluster, make_manager):
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1, "max_size": 3})
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    for host in cluster.hosts:
        host.latency = 0.002  # connects take a moment, so cancellations land inside them too
    rng = random.Random(1234)

    async def user() -> None:
        async with pm.acquire(read_only=rng.random() < 0.5) as conn:
            await conn.execute("SELECT 1")

    for _ in range(60):
        tasks = [asyncio.ensure_future(user()) for _ in range(15)]
        await asyncio.sleep(rng.random() * 0.01)
        for task in tasks:
            if rng.random() < 0.6:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert all(h.pool.in_use == 0 for h in pm.metrics().hosts)
    pools = pm.driver.pools
    assert all(not p.in_use and p.opening == 0 for p in pools)
    # Every open connection is an idle pooled one or a monitor connection: nothing leaked.
    idle = sum(len(p.idle) for p in pools)
    assert cluster.open_connections == idle + 3


async def test_hasql_pool_api(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    master = await pm.get_pool(read_only=False)
    replica = await pm.get_pool(read_only=True)
    assert pm.pool_is_master(master) and not pm.pool_is_replica(master)
    assert pm.pool_is_replica(replica) and not pm.pool_is_master(replica)
    assert await pm.get_master_pools() == [master]
    assert len(await pm.get_replica_pools()) == 2
    assert pm.get_last_response_time(master) is not None
    async with pm.acquire_from_pool(replica) as conn:
        assert conn.host.role == "standby"
    raw = await replica.acquire()  # straight from the driver's pool, then registered
    pm.register_connection(raw, replica)
    await pm.release(raw)
    assert not replica.in_use
    conn = await pm.acquire_from_pool(master)
    await pm.release_to_pool(conn, master)
    with pytest.raises(ValueError, match="did not hand out"):
        await pm.release(conn)
    assert not pm.is_connection_closed(conn)
    assert [d.host for d in pm.dsn] == ["db0", "db1", "db2"]
    assert len(pm.pools) == 3
    await pm.wait_next_pool_check(timeout=5)


async def test_metrics(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    async with pm.acquire_master():
        metrics = pm.metrics()
        assert metrics.hasql.acquire["db0:5432"] == 1
        assert [d.used for d in metrics.drivers] == [1, 0, 0]
    host = pm.metrics().hosts[0]
    assert host.state.role is Role.PRIMARY and host.acquire_count == 1
    assert host.pool.in_use == 0 and host.response_time is not None


async def test_reprs_and_errors_hide_the_password(cluster, make_manager, caplog):
    caplog.set_level("DEBUG")
    cluster.hosts[1].down = cluster.hosts[2].down = True
    pm = make_manager(cluster, acquire_timeout=0.2)
    await pm.ready(masters_count=1, replicas_count=0, timeout=5)
    with pytest.raises(asyncio.TimeoutError) as info:
        await pm.acquire_replica(master_as_replica_weight=0.0, timeout=0.2)
    seen = [
        repr(pm),
        str(pm.dsn),
        repr(pm.dsn),
        str(info.value),
        repr(pm.metrics()),
        repr(pm.host_states()),
        caplog.text,
    ]
    assert cluster.password not in "\n".join(seen)
    assert "db1:5432" in str(info.value)


def test_unclosed_manager_does_not_hang_interpreter_exit(tmp_path):
    script = tmp_path / "unclosed.py"
    script.write_text(
        textwrap.dedent("""
        import asyncio
        from hasql_core import PoolManager
        from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

        async def main():
            cluster = FakeCluster(3)
            cluster.hosts[2].freeze()  # a probe is in flight and never answers
            pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), refresh_timeout=60)
            await pm.ready(masters_count=1, replicas_count=1, timeout=5)
            conn = await pm.acquire_master()  # never released, manager never closed
            print("done", flush=True)

        asyncio.run(main())
    """)
    )
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"


async def test_terminate_right_after_start_stops_every_monitor():
    # A probe that completes at the moment of cancellation must not swallow the cancellation
    # (asyncio.wait_for before 3.12 does exactly that), or monitors outlive the manager.
    cluster = FakeCluster(3)
    for _ in range(20):
        pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), refresh_delay=0.05)
        await asyncio.sleep(0)
        await pm.terminate()
        monitors = [
            t
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "") == "HostMonitor.run"
        ]
        assert all(task.done() for task in monitors)
    assert cluster.open_connections == 0


async def test_host_selection_parameters_are_dropped_per_host():
    cluster = FakeCluster(2)
    dsn = cluster.dsn + "?target_session_attrs=read-write&load_balance_hosts=random&sslmode=prefer"
    pm = PoolManager(dsn, driver=FakeDriver(cluster))
    try:
        assert [d.options() for d in pm.dsn] == [{"sslmode": "prefer"}] * 2
        await pm.ready(masters_count=1, replicas_count=1, timeout=5)
    finally:
        await pm.close()


async def test_refresh_probes_at_once_and_names_unknown_hosts(cluster, make_manager):
    pm = make_manager(cluster, refresh_delay=60.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    before = cluster.hosts[1].probes
    pm.refresh("db1:5432")
    await wait_for(lambda: cluster.hosts[1].probes > before)
    with pytest.raises(ValueError, match=r"no host 'db9:5432'.*db0:5432"):
        pm.refresh("db9:5432")
