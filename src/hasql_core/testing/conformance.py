"""The driver conformance suite: what every driver plugin must prove against a real cluster.

A plugin runs it by importing the tests into one of its test modules and providing two fixtures::

    # plugins/hasql-mydriver/tests/test_conformance.py
    import pytest
    from hasql_core.testing.conformance import *  # noqa: F403  (the tests)

    @pytest.fixture
    def conformance_driver() -> str:
        return "mydriver"

    @pytest.fixture
    def conformance_sql() -> SqlRunner:
        return MySqlRunner()   # runs a query on one of the driver's connections

Pools are sized in asyncpg's and psycopg_pool's words (``min_size``/``max_size``) unless the
runner also has the driver suite adapter's ``pool_options(min_size, max_size)`` method (see
:meth:`hasql_core.testing.driver_suite.DriverSuiteAdapter.pool_options`), which then writes
every ``pool_factory_kwargs`` the suite passes: a driver suite adapter serves as the runner.

Every test starts its own local cluster (``hasql_core.testing.cluster``) and drives a real
:class:`~hasql_core.PoolManager` over it. Time bounds here are behavioural bounds with generous slack,
not performance targets.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Protocol

import pytest

from ..errors import AcquireTimeoutError, ReadyTimeoutError
from ..host_state import Role
from ..manager import PoolManager
from .cluster import LocalCluster

__all__ = [
    "SqlRunner",
    "test_all_hosts_down_then_back",
    "test_cancelled_acquires_leak_nothing",
    "test_close_and_terminate_with_connections_out",
    "test_failover_after_primary_crash",
    "test_frozen_primary_then_thawed_old_primary_gets_no_writes",
    "test_frozen_replica_stops_getting_reads",
    "test_lagging_replica_excluded_then_readmitted",
    "test_no_password_in_logs",
    "test_pool_sizes_are_exact",
    "test_read_only_primary_is_still_primary",
    "test_roles_found_and_routed",
    "test_write_failure_on_demoted_host_reprobes_at_once",
]

#: Fast monitor settings so scenarios finish quickly; bounds below are derived from them.
REFRESH_DELAY = 0.3
REFRESH_TIMEOUT = 1.0
SLACK = 3.0


class SqlRunner(Protocol):
    """How the suite runs SQL on a connection handed out by the plugin's driver.

    A runner may also have ``pool_options(min_size, max_size) -> dict``: the ``pool_factory_kwargs``
    of a pool of ``min_size`` to ``max_size`` connections in the library's own words (see
    :func:`pool_options`).
    """

    async def fetchval(self, connection: Any, sql: str) -> Any:
        """Run ``sql`` and return the first column of its first row."""

    async def execute(self, connection: Any, sql: str) -> None:
        """Run ``sql`` (a write) and commit it."""


def pool_options(sql: SqlRunner, min_size: int, max_size: int) -> dict[str, Any]:
    """``pool_factory_kwargs`` for a pool of ``min_size`` to ``max_size`` connections: from the
    runner's ``pool_options`` method when it has one, else asyncpg's and psycopg_pool's
    ``min_size``/``max_size``."""
    own: Callable[[int, int], dict[str, Any]] | None = getattr(sql, "pool_options", None)
    if own is not None:
        return own(min_size, max_size)
    return {"min_size": min_size, "max_size": max_size}


@pytest.fixture
def conformance_cluster() -> Iterator[LocalCluster]:
    """A fresh primary with two streaming replicas and a table ``conformance`` to write into."""
    with LocalCluster(replicas=2) as cluster:
        cluster.execute(cluster.primary, "CREATE TABLE conformance (id serial PRIMARY KEY, v text)")
        cluster.wait_replayed()
        yield cluster


@pytest.fixture
async def conformance_manager(
    conformance_cluster: LocalCluster, conformance_driver: str, conformance_sql: SqlRunner
) -> AsyncIterator[Callable[..., Awaitable[PoolManager]]]:
    """Make ready managers over the cluster with fast monitor settings and pools of 1 to 4
    connections (see :func:`pool_options`); all closed at the end."""
    managers: list[PoolManager] = []

    async def make(ready: bool = True, **kwargs: Any) -> PoolManager:
        options: dict[str, Any] = {
            "refresh_delay": REFRESH_DELAY,
            "refresh_timeout": REFRESH_TIMEOUT,
            "acquire_timeout": 5.0,
            "pool_factory_kwargs": pool_options(conformance_sql, 1, 4),
            **kwargs,
        }
        manager = PoolManager(conformance_cluster.dsn, driver=conformance_driver, **options)
        managers.append(manager)
        if ready:
            await manager.ready(masters_count=1, replicas_count=2, timeout=15)
        return manager

    yield make
    for manager in managers:
        await manager.terminate()


async def _port_of(pm: PoolManager, sql: SqlRunner, *, read_only: bool, **kwargs: Any) -> int:
    async with pm.acquire(read_only=read_only, **kwargs) as conn:
        return int(await sql.fetchval(conn, "SELECT inet_server_port()"))


async def _write(pm: PoolManager, sql: SqlRunner, value: str, timeout: float = 5.0) -> int:
    async with pm.acquire_master(timeout=timeout) as conn:
        await sql.execute(conn, f"INSERT INTO conformance (v) VALUES ('{value}')")
        return int(await sql.fetchval(conn, "SELECT inet_server_port()"))


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll every 20 ms; return the seconds it took, fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while not predicate():
        if loop.time() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        await asyncio.sleep(0.02)
    return loop.time() - started


async def _to_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.to_thread(func, *args)


def _backends(cluster: LocalCluster, node: Any) -> int:
    rows = cluster.execute(
        node,
        "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' "
        f"AND usename = '{cluster.user}'",
    )
    return int(rows[0][0])


async def test_roles_found_and_routed(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """ready(1, 2) returns; writes land on the primary, reads on the replicas."""
    pm = await conformance_manager()
    cluster = conformance_cluster
    assert await _write(pm, conformance_sql, "a") == cluster.primary.port
    replica_ports = {n.port for n in cluster.replicas}
    reads = {await _port_of(pm, conformance_sql, read_only=True) for _ in range(30)}
    assert reads == replica_ports
    async with pm.acquire_replica() as conn:
        assert await conformance_sql.fetchval(conn, "SELECT pg_is_in_recovery()") is True
    roles = [s.role for s in pm.host_states()]
    assert roles == [Role.PRIMARY, Role.STANDBY, Role.STANDBY]


async def test_pool_sizes_are_exact(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """Each host has exactly the pool's connections plus one monitor connection."""
    options = pool_options(conformance_sql, 3, 3)
    unchanged = copy.deepcopy(options)
    pm = await conformance_manager(pool_factory_kwargs=options)
    assert options == unchanged
    for node in conformance_cluster.nodes:
        assert _backends(conformance_cluster, node) == 3 + 1
    held = [await pm.acquire_master() for _ in range(3)]
    with pytest.raises(AcquireTimeoutError):
        await pm.acquire_master(timeout=0.3)
    assert _backends(conformance_cluster, conformance_cluster.primary) == 3 + 1
    for conn in held:
        await pm.release(conn)


async def test_failover_after_primary_crash(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """Kill -9 the primary, promote a replica, re-point the other: writes resume in the same
    manager, reads keep working throughout from the surviving replica."""
    cluster = conformance_cluster
    pm = await conformance_manager()
    old, new, other = cluster.nodes
    read_failures: list[BaseException] = []
    stop = asyncio.Event()

    async def reader() -> None:
        while not stop.is_set():
            try:
                port = await _port_of(pm, conformance_sql, read_only=True)
                assert port != old.port
            except Exception as error:
                read_failures.append(error)
            await asyncio.sleep(0.01)

    reading = asyncio.ensure_future(reader())
    await _to_thread(cluster.kill, old)
    await _to_thread(cluster.promote, new)
    await _to_thread(cluster.repoint, other, new)
    port = await _write(pm, conformance_sql, "after-failover", timeout=10)
    assert port == new.port
    stop.set()
    await reading
    # Reads on the surviving replica never failed; the promoted one may drop out while it switches.
    assert all(not isinstance(e, AcquireTimeoutError) for e in read_failures), read_failures
    assert await _port_of(pm, conformance_sql, read_only=True) == other.port


async def test_frozen_primary_then_thawed_old_primary_gets_no_writes(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """A frozen primary is marked unavailable within refresh_delay + refresh_timeout; after a
    promotion writes go to the new primary, and the thawed old one (still primary, lower timeline)
    gets none."""
    cluster = conformance_cluster
    pm = await conformance_manager()
    old, new, other = cluster.nodes
    await _to_thread(cluster.freeze, old)
    took = await _until(
        lambda: pm.host_states()[0].role is Role.UNAVAILABLE,
        REFRESH_DELAY + REFRESH_TIMEOUT + SLACK,
        "frozen primary marked unavailable",
    )
    assert took <= REFRESH_DELAY + REFRESH_TIMEOUT + SLACK
    await _to_thread(cluster.promote, new)
    await _to_thread(cluster.repoint, other, new)
    assert await _write(pm, conformance_sql, "new-primary", timeout=10) == new.port
    await _to_thread(cluster.thaw, old)
    await _until(lambda: pm.host_states()[0].role is Role.PRIMARY, 10, "thawed primary probed")
    assert pm.host_states()[0].split_brain and pm.host_states()[1].writable
    ports = {await _write(pm, conformance_sql, f"w{i}") for i in range(20)}
    assert ports == {new.port}


async def test_frozen_replica_stops_getting_reads(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """Reads leave a frozen replica once it is marked unavailable, and return after a thaw."""
    cluster = conformance_cluster
    pm = await conformance_manager()
    frozen = cluster.nodes[2]
    await _to_thread(cluster.freeze, frozen)
    await _until(
        lambda: pm.host_states()[2].role is Role.UNAVAILABLE,
        REFRESH_DELAY + REFRESH_TIMEOUT + SLACK,
        "frozen replica marked unavailable",
    )
    reads = {await _port_of(pm, conformance_sql, read_only=True) for _ in range(20)}
    assert reads == {cluster.nodes[1].port}
    await _to_thread(cluster.thaw, frozen)
    await _until(lambda: pm.host_states()[2].role is Role.STANDBY, 10, "thawed replica back")


async def test_lagging_replica_excluded_then_readmitted(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """A replica whose replay is paused while writes go on leaves the reads beyond max_lag_bytes,
    and comes back once it has caught up."""
    cluster = conformance_cluster
    pm = await conformance_manager(max_lag_bytes=64 * 1024)
    lagging = cluster.nodes[2]
    await _to_thread(cluster.pause_replay, lagging)
    filler = "x" * 1000
    for i in range(200):
        await _write(pm, conformance_sql, f"{filler}{i}")
    await _until(lambda: pm.host_states()[2].stale, 10, "paused replica seen beyond the limit")
    assert (pm.host_states()[2].lag_bytes or 0) > 64 * 1024
    reads = {await _port_of(pm, conformance_sql, read_only=True) for _ in range(20)}
    assert reads == {cluster.nodes[1].port}
    await _to_thread(cluster.resume_replay, lagging)
    await _until(lambda: not pm.host_states()[2].stale, 10, "replica readmitted")
    reads = {await _port_of(pm, conformance_sql, read_only=True) for _ in range(40)}
    assert lagging.port in reads


async def test_read_only_primary_is_still_primary(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """default_transaction_read_only=on on the primary: still found as primary, flagged read-only."""
    cluster = conformance_cluster
    cluster.execute(cluster.primary, "ALTER SYSTEM SET default_transaction_read_only = on")
    cluster.execute(cluster.primary, "SELECT pg_reload_conf()")
    pm = await conformance_manager()
    state = pm.host_states()[0]
    assert state.role is Role.PRIMARY and state.read_only
    assert await _port_of(pm, conformance_sql, read_only=False) == cluster.primary.port


async def test_write_failure_on_demoted_host_reprobes_at_once(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """With a refresh_delay far beyond the test, only the error-triggered re-probe (and fast
    probing while the write waits) can move writes to the new primary in time."""
    cluster = conformance_cluster
    pm = await conformance_manager(refresh_delay=120.0)
    old, new, other = cluster.nodes
    await _to_thread(cluster.promote, new)
    await _to_thread(cluster.repoint, other, new)
    await _to_thread(cluster.rejoin, old, new)  # the old primary is now a standby of the new one
    with contextlib.suppress(Exception):  # fails: the view still says old is primary
        await _write(pm, conformance_sql, "to-the-old-primary")
    assert await _write(pm, conformance_sql, "to-the-new-primary", timeout=10) == new.port
    assert pm.host_states()[0].role is not Role.PRIMARY


async def test_all_hosts_down_then_back(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """With every host stopped acquires fail with the explanatory timeout; after a restart they
    succeed again in the same manager."""
    cluster = conformance_cluster
    pm = await conformance_manager()
    for node in reversed(cluster.nodes):
        await _to_thread(cluster.stop, node, "immediate")
    await _until(lambda: not any(s.available for s in pm.host_states()), 10, "all unavailable")
    with pytest.raises(AcquireTimeoutError) as info:
        await _write(pm, conformance_sql, "nowhere", timeout=0.5)
    assert "unavailable" in str(info.value) and str(cluster.primary.port) in str(info.value)
    for node in cluster.nodes:
        await _to_thread(cluster.start_node, node)
    await pm.ready(masters_count=1, replicas_count=2, timeout=20)
    assert await _write(pm, conformance_sql, "back", timeout=10) == cluster.primary.port


async def test_no_password_in_logs(
    conformance_cluster: LocalCluster,
    conformance_manager: Any,
    conformance_sql: SqlRunner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing logged during failures and a failover contains the password."""
    caplog.set_level(logging.DEBUG)
    cluster = conformance_cluster
    pm = await conformance_manager()
    await _to_thread(cluster.kill, cluster.nodes[0])
    await _to_thread(cluster.promote, cluster.nodes[1])
    await _write(pm, conformance_sql, "x", timeout=10)
    with pytest.raises(ReadyTimeoutError) as info:  # describes every host, the dead one too
        await pm.ready(masters_count=1, replicas_count=2, timeout=0.3)
    assert cluster.password not in caplog.text
    assert cluster.password not in str(info.value) and cluster.password not in repr(pm)
    assert caplog.records, "the scenario should have logged something"


async def test_close_and_terminate_with_connections_out(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """close() waits for handed-out connections (bounded) and terminate() closes them at once."""
    cluster = conformance_cluster
    pm = await conformance_manager()
    conn = await pm.acquire_master()
    closing = asyncio.ensure_future(pm.close(timeout=10))
    await _until(lambda: pm.closing, 5, "closing")
    assert not closing.done()
    await pm.release(conn)
    await asyncio.wait_for(closing, 10)
    pm2 = await conformance_manager()
    held = [await pm2.acquire_master(), await pm2.acquire_replica()]
    await pm2.terminate()
    assert all(pm2.is_connection_closed(c) for c in held)
    await _until(
        lambda: sum(_backends(cluster, n) for n in cluster.nodes) == 0, 10, "every backend gone"
    )


async def test_cancelled_acquires_leak_nothing(
    conformance_cluster: LocalCluster, conformance_manager: Any, conformance_sql: SqlRunner
) -> None:
    """Acquires cancelled at random points leave every connection idle in its pool."""
    cluster = conformance_cluster
    pm = await conformance_manager(pool_factory_kwargs=pool_options(conformance_sql, 1, 3))
    rng = random.Random(7)

    async def user() -> None:
        async with pm.acquire(read_only=rng.random() < 0.5) as conn:
            await conformance_sql.fetchval(conn, "SELECT pg_sleep(0.001)")

    for _ in range(30):
        tasks = [asyncio.ensure_future(user()) for _ in range(10)]
        await asyncio.sleep(rng.random() * 0.01)
        for task in tasks:
            if rng.random() < 0.6:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # A driver whose releases finish in the background may still be resetting the last ones.
    def all_idle() -> bool:
        return all(m.pool.in_use == 0 for m in pm.metrics().hosts)

    await _until(all_idle, 5, "every connection back in its pool")
    for index, node in enumerate(cluster.nodes):
        # The pool's connections and the monitor's. Both sides are read again on every poll: a
        # connection discarded by a cancelled block may still be closing (its pool slot and its
        # server backend go away one after the other).
        def settled(node: Any = node, index: int = index) -> bool:
            size = pm.metrics().hosts[index].pool.size
            return bool(_backends(cluster, node) == size + 1)

        await _until(settled, 5, f"{node.name}: backends = pool size + monitor")
