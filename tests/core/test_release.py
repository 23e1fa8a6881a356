"""Giving connections back: bounded by ``release_timeout``, and discarded (no server round trip)
when the statement was interrupted, the host failed, or the caller was cancelled."""

from __future__ import annotations

import asyncio

import pytest

from hasql_core import ConfigurationError, ErrorFacts, ErrorKind, PoolManager
from hasql_core._deadline import within
from hasql_core.error_kinds import classify
from hasql_core.testing.fake_driver import FakeCluster, FakeConnectionLost, FakeDriver

from .conftest import wait_for

#: A bound that turns a hang into a test failure; far above every bound the tests configure.
HANG = 10.0


def _in_use(pm) -> int:
    return sum(host.pool.in_use for host in pm.metrics().hosts)


async def _frozen_primary_with_interrupted_statement(cluster, pm):
    """Acquire from the primary, freeze it, and let a statement time out on the connection.

    The managers of these tests probe every 30 s, so the monitor does not notice the freeze.
    """
    await pm.ready(masters_count=1, replicas_count=2)
    conn = await pm.acquire_master()
    cluster.hosts[0].freeze()
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(conn.execute("UPDATE t SET v = 1"), 0.05)
    return conn


async def test_interrupted_statement_is_discarded_while_host_stays_frozen(cluster, make_manager):
    pm = make_manager(cluster, release_timeout=30.0, refresh_delay=30.0)
    driver = pm.driver
    await pm.ready(masters_count=1, replicas_count=2)
    cluster.hosts[0].freeze()

    async def one_operation() -> None:
        async with pm.acquire_master() as conn:
            await asyncio.wait_for(conn.execute("UPDATE t SET v = 1"), 0.05)

    with pytest.raises(asyncio.TimeoutError):
        await within(one_operation(), HANG)
    # Left the block with the host still frozen and no release bound reached: discarded, not reset.
    assert cluster.hosts[0].frozen
    assert driver.discarded == 1
    assert _in_use(pm) == 0
    assert pm.metrics().hosts[0].discarded == 1
    cluster.hosts[0].thaw()


async def test_explicit_release_is_bounded_by_release_timeout(cluster, make_manager):
    pm = make_manager(cluster, release_timeout=0.2, refresh_delay=30.0)
    conn = await _frozen_primary_with_interrupted_statement(cluster, pm)
    await within(pm.release(conn), HANG)
    assert cluster.hosts[0].frozen  # returned before the host answered
    assert pm.driver.discarded == 1
    assert _in_use(pm) == 0
    assert pm.metrics().hosts[0].errors.get("release_timeout") == 1
    cluster.hosts[0].thaw()


async def test_cancelled_release_leaves_nothing_checked_out(cluster, make_manager):
    pm = make_manager(cluster, release_timeout=30.0, refresh_delay=30.0)
    conn = await _frozen_primary_with_interrupted_statement(cluster, pm)
    releasing = asyncio.ensure_future(pm.release(conn))
    await asyncio.sleep(0)  # let the release start and block on the frozen host
    assert not releasing.done()
    releasing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await releasing
    assert pm.driver.discarded == 1
    assert _in_use(pm) == 0
    with pytest.raises(ValueError, match="did not hand out"):
        await pm.release(conn)
    cluster.hosts[0].thaw()


async def test_connection_that_failed_with_host_failure_is_discarded(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2)
    with pytest.raises(FakeConnectionLost):
        async with pm.acquire_master():
            raise FakeConnectionLost("server closed the connection")
    assert pm.driver.discarded == 1
    assert pm.metrics().hosts[0].errors.get("connection_lost") == 1


async def test_healthy_connection_goes_back_to_the_pool(cluster, make_manager):
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1, "max_size": 1})
    await pm.ready(masters_count=1, replicas_count=2)
    async with pm.acquire_master() as first:
        await first.execute("UPDATE t SET v = 1")
    conn = await pm.acquire_master()
    await pm.release(conn)
    assert conn is first  # the one pooled connection, reused
    assert pm.driver.discarded == 0


async def test_application_error_does_not_discard(cluster, make_manager):
    pm = make_manager(cluster)
    await pm.ready(masters_count=1, replicas_count=2)
    with pytest.raises(ZeroDivisionError):
        async with pm.acquire_master():
            1 / 0  # noqa: B018
    assert pm.driver.discarded == 0


async def test_discard_frees_the_slot_for_a_waiting_acquire(make_manager):
    cluster = FakeCluster(2)
    pm = make_manager(cluster, pool_factory_kwargs={"min_size": 1, "max_size": 1})
    await pm.ready(masters_count=1, replicas_count=1)
    conn = await pm.acquire_master()
    waiting = asyncio.ensure_future(pm.acquire_master(timeout=5))
    await asyncio.sleep(0.01)
    assert not waiting.done()
    pm.report_error(conn, FakeConnectionLost("gone"))
    await pm.release(conn)
    second = await within(waiting, HANG)
    assert second is not conn
    await pm.release(second)


def test_release_timeout_must_be_positive():
    cluster = FakeCluster(2)
    with pytest.raises(ConfigurationError, match="release_timeout must be a positive"):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), release_timeout=0)


@pytest.mark.parametrize(
    ("facts", "kind"),
    [
        (ErrorFacts(sqlstate="25006"), ErrorKind.READ_ONLY),
        (ErrorFacts(sqlstate="57P01"), ErrorKind.CONNECTION_LOST),
        (ErrorFacts(sqlstate="57P02"), ErrorKind.CONNECTION_LOST),
        (ErrorFacts(sqlstate="57P03"), ErrorKind.UNAVAILABLE),
        (ErrorFacts(sqlstate="08006"), ErrorKind.CONNECTION_LOST),
        (ErrorFacts(sqlstate="08001", connection_lost=True), ErrorKind.CONNECTION_LOST),
        (ErrorFacts(connection_lost=True), ErrorKind.CONNECTION_LOST),
        (ErrorFacts(sqlstate="42601"), ErrorKind.OTHER),
        (ErrorFacts(sqlstate="57014"), ErrorKind.OTHER),  # query_canceled: the session lives on
        (ErrorFacts(), ErrorKind.OTHER),
    ],
)
def test_one_classification_of_error_facts(facts, kind):
    assert classify(facts) is kind


async def test_unknown_pool_option_fails_ready_and_acquire_at_once(cluster, make_manager, caplog):
    from hasql_core import PoolSetupError

    pm = make_manager(cluster, pool_factory_kwargs={"max_sise": 3})
    with pytest.raises(PoolSetupError, match="max_sise") as caught:
        await within(pm.ready(masters_count=1, replicas_count=2, timeout=60), HANG)
    assert isinstance(caught.value.__cause__, TypeError)
    with pytest.raises(PoolSetupError, match="pool_factory_kwargs"):
        await within(pm.acquire_master(timeout=60), HANG)
    with pytest.raises(PoolSetupError):
        await within(pm.acquire_replica(timeout=60), HANG)


async def test_transient_pool_failure_is_named_in_the_timeout_error(cluster):
    from hasql_core import AcquireTimeoutError, PoolManager

    dsn = cluster.dsn.replace(cluster.password, "wrong-pw")  # pools refused, probes answered
    pm = PoolManager(dsn, driver=FakeDriver(cluster), refresh_delay=0.05, refresh_timeout=0.3)
    try:
        with pytest.raises(AcquireTimeoutError, match="opening the pool: PermissionError") as info:
            await pm.acquire_master(timeout=0.5)
        assert "wrong-pw" not in str(info.value)
    finally:
        await pm.terminate()


@pytest.mark.parametrize(
    ("masters", "replicas", "message"),
    [(4, 0, "names 3 host"), (1, 3, "names 3 host")],
)
async def test_ready_counts_no_cluster_can_reach_fail_at_once(
    cluster, make_manager, masters, replicas, message
):
    pm = make_manager(cluster)
    with pytest.raises(Exception, match=message):
        await within(pm.ready(masters_count=masters, replicas_count=replicas, timeout=60), HANG)
    with pytest.raises(Exception, match="can never"):
        await within(pm.wait_replicas_ready(4, timeout=60), HANG)


async def test_close_does_not_wait_on_a_host_that_stopped_answering(cluster, make_manager):
    pm = make_manager(cluster, close_timeout=30.0)
    await pm.ready(masters_count=1, replicas_count=2, timeout=5)
    cluster.hosts[2].freeze()
    await wait_for(lambda: not pm.host_states()[2].available, timeout=5)
    await within(pm.close(), HANG)
    assert cluster.hosts[2].frozen  # closed without an answer from it
    assert pm.closed
    cluster.hosts[2].thaw()


class BackoffDriver(FakeDriver):
    """A driver whose library waits on its own reconnect schedule after an outage."""

    replace_pool_after_outage = True


async def test_pool_replaced_when_its_host_is_back_and_old_connections_are_discarded():
    cluster = FakeCluster(2)
    driver = BackoffDriver(cluster)
    pm = PoolManager(cluster.dsn, driver=driver, refresh_delay=0.05, refresh_timeout=0.3)
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=5)
        held = await pm.acquire_master()
        old_pool = pm.pools[0]
        cluster.hosts[0].down = True
        await wait_for(lambda: not pm.host_states()[0].available)
        cluster.hosts[0].down = False
        await wait_for(lambda: pm.host_states()[0].available)
        assert pm.pools[0] is not old_pool
        await wait_for(lambda: old_pool.closed)  # retired in the background
        async with pm.acquire_master() as conn:  # from the new pool, at once
            assert conn in pm.pools[0].in_use
        await pm.release(held)  # came from the old pool: discarded there, not put in the new one
        assert driver.discarded == 1 and held not in pm.pools[0].idle
    finally:
        await pm.terminate()
