"""The driver suite: what a driver plugin must prove, method by method, against real servers.

:mod:`hasql_core.driver` states the contract of a driver; this suite is its executable form. Every
scenario here runs the plugin's driver directly (``create_pool``, ``acquire``, ``discard``,
``probe``, ``error_facts``, ...) against real local PostgreSQL servers, plus a few through a
:class:`~hasql_core.PoolManager` where the core and the driver share a duty (a bounded release).
The manager-level scenarios (failover, lag, split brain, ...) are in
:mod:`hasql_core.testing.conformance`; a driver runs both.

Running it
==========

A plugin imports the tests into one test module and provides one fixture, an adapter that tells
the suite the driver's name and how to use one of its connections::

    # plugins/hasql-mydriver/tests/test_mydriver_driver_suite.py
    from typing import Any

    import pytest

    from hasql_core.testing.driver_suite import *  # noqa: F403  (the tests and their fixtures)


    class MyAdapter:
        driver_name = "mydriver"

        def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
            return {"min_size": min_size, "max_size": max_size}

        async def fetchval(self, connection: Any, sql: str) -> Any: ...  # first column, first row
        async def execute(self, connection: Any, sql: str) -> None: ...  # run it, commit it
        async def begin(self, connection: Any, *, read_only: bool = False) -> None: ...


    @pytest.fixture
    def driver_suite_adapter() -> MyAdapter:
        return MyAdapter()

Name the module after the plugin (``test_<plugin>_driver_suite.py``): pytest and mypy see every
plugin's tests folder as top-level modules, so the names must not collide. Everything else goes
through the :class:`~hasql_core.driver.Driver` methods: the adapter is only what the contract
leaves to the library (see :class:`DriverSuiteAdapter`). A test the driver cannot pass yet is best
marked ``xfail(strict=True)`` with the reason from the plugin's ``conftest.py``. The suite needs
pytest-asyncio (every test is marked ``asyncio``) and pytest-timeout (every test is bounded), and
the ``hasql_cluster`` fixtures of hasql-core's pytest plugin (installed with hasql-core). Tests
that do not change the topology share one cluster per module (:func:`suite_cluster`, a primary
and a replica); tests that freeze, stop, kill or promote a node get a fresh cluster each. Each test
tags its connections with its own ``application_name`` (in the DSN) to count them in
``pg_stat_activity``. Time bounds are behavioural bounds with generous slack (:data:`SLACK`), not
performance targets; every wait on a condition polls it with a deadline.

What each group of tests proves
===============================

**Monitor connection and probe** (``connect_monitor``, ``probe``, ``close_monitor``). A probe
returns the row's values as plain Python types in column order; it tells a primary from a standby
and follows the standby's replay (receive position ahead of replay while replay is paused); a
promotion is seen by the very next probe on the same connection (the monitor connection is in
autocommit, never idle in a transaction); the monitor connects to a standby whatever
``target_session_attrs`` says (the core picks hosts, not libpq). On a frozen host (SIGSTOP: a hung
VM, a partition that drops packets) ``connect_monitor`` is bounded by its ``timeout`` and by
cancellation, a cancelled probe and ``close_monitor`` return at once, and no socket or task is left
behind. A probe on a stopped server fails as a lost connection.

**Pools** (``create_pool``, ``open_pool``, ``pool_stats``, ``free_size``, ``close_pool``,
``terminate_pool``, ``expire_idle``). ``create_pool`` does no I/O and leaves the user's options
untouched; a pool holds exactly the connections the user asked for (``min_size`` once opened, never
more than ``max_size``) and :class:`~hasql_core.driver.PoolStats` reports them exactly;
DSN settings reach the server; Unix socket DSNs work; ``close_pool`` waits for handed-out
connections; ``terminate_pool`` closes them at once, a running statement included;
``expire_idle`` makes sure no connection opened before it is handed out again; an idle connection
the server ended is not handed out.

**Cancellation and failed opens.** Every driver coroutine is cancellation-safe on its own:
acquires and releases cancelled at random points leave nothing checked out and no connection
lost, and a release cancelled right after it started still gives the connection back; a cancelled
or failed ``open_pool`` (closed port, frozen host) followed by ``terminate_pool`` leaves no server
session, no socket and no task.

**Release and discard under faults.** A statement on a handed-out connection abandoned at the
application's deadline (``asyncio.wait_for``) on a frozen host ends soon after that deadline: the
library must not keep the caller while it tries to cancel the statement on a server that does not
answer.
``discard`` is synchronous and does no I/O: on a frozen host it returns at once, the slot is free
again (``in_use`` goes down, ``max_size`` connections can be had after the thaw) and the server
session ends after the thaw; it ends a release of the same connection that is in flight on a
frozen host without losing the slot or handing the connection out again; it does nothing for a
connection already released or discarded and never raises. Through a ``PoolManager``: in an
application-style loop on a frozen primary every statement gives up within its bound and every
``async with`` is left within the release bound (``release_timeout``, by default
``refresh_timeout``); a release that would roll back on a frozen primary is bounded the same way;
cancelling the caller during a release leaves nothing checked out.

**Error facts** (``error_facts``, classified by :func:`hasql_core.error_kinds.classify`). For the
same server answer every driver reports the same facts: a write on a standby or in a read-only
transaction is ``ErrorFacts(sqlstate="25006")`` (READ_ONLY); a backend ended by
``pg_terminate_backend()`` or a server shutdown is a lost connection (57P01 or the library's
"connection lost"), as is a refused connection; a statement's own client-side timeout is *not* a
lost connection; SQL errors (syntax, division by zero, unique violation, ``statement_timeout``)
carry their SQLSTATE and are OTHER; plain Python exceptions never make ``error_facts`` raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import gc
import itertools
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import Any, Protocol, TypeVar, cast

import pytest

from .._plugins import make_driver
from .._probe import PROBE_QUERY, parse_probe_row
from ..driver import Driver, ErrorFacts, ErrorKind, PoolStats
from ..dsn import Dsn, parse_dsn
from ..errors import AcquireTimeoutError
from ..manager import PoolManager
from .cluster import LocalCluster, Node
from .conformance import SqlRunner
from .drivers import client_backends, eventually
from .drivers import node_dsn as _dsn

__all__ = [
    "SLACK",
    "DriverSuiteAdapter",
    "suite_app_name",
    "suite_cluster",
    "suite_driver",
    "test_acquires_and_releases_cancelled_at_random_leave_nothing_checked_out",
    "test_async_with_left_after_a_statement_timeout_on_frozen_primary_is_bounded",
    "test_cancelled_open_leaves_no_server_session",
    "test_cancelled_open_on_frozen_host_leaves_no_socket_and_no_task",
    "test_cancelled_release_leaves_nothing_checked_out",
    "test_cancelling_the_caller_of_a_release_on_frozen_primary_leaves_nothing_checked_out",
    "test_client_side_statement_timeout_is_not_a_lost_connection",
    "test_close_pool_waits_for_handed_out_connections",
    "test_connect_monitor_to_frozen_host_is_bounded_by_timeout_and_cancellation",
    "test_discard_during_release_in_flight_on_frozen_host_ends_it_and_keeps_the_slot",
    "test_discard_of_released_or_broken_connection_does_nothing_and_never_raises",
    "test_discard_on_frozen_host_returns_at_once_and_frees_the_slot",
    "test_dsn_settings_reach_the_server",
    "test_error_facts_of_plain_python_exceptions",
    "test_expire_idle_hands_out_no_connection_opened_before",
    "test_failed_open_on_closed_port_then_terminate_leaves_nothing",
    "test_idle_connection_ended_by_the_server_is_not_handed_out",
    "test_monitor_and_pool_reach_a_standby_whatever_target_session_attrs_says",
    "test_monitor_connection_stays_out_of_transactions_and_close_ends_the_session",
    "test_paused_replay_shows_receive_position_ahead_of_replay",
    "test_pool_sizes_and_stats_are_exactly_what_the_user_asked",
    "test_probe_and_close_monitor_on_frozen_host_return_at_once",
    "test_probe_on_stopped_server_and_connect_to_it_are_connection_lost",
    "test_probe_row_has_plain_python_types",
    "test_probe_sees_promotion_on_the_same_monitor_connection",
    "test_probe_tells_primary_from_standby_and_follows_replay",
    "test_query_row_on_a_handed_out_connection_reads_the_primary_position",
    "test_refused_connection_is_connection_lost",
    "test_release_of_open_transaction_on_frozen_primary_is_bounded",
    "test_server_errors_of_a_statement_carry_their_sqlstate_and_are_other",
    "test_server_shutdown_ends_handed_out_connection_as_connection_lost",
    "test_statement_abandoned_on_frozen_host_ends_soon_after_its_deadline",
    "test_terminate_pool_closes_handed_out_connections_at_once",
    "test_terminated_backend_is_connection_lost",
    "test_unix_socket_dsn_connects",
    "test_write_in_read_only_transaction_is_sqlstate_25006_read_only",
    "test_write_on_standby_is_sqlstate_25006_read_only",
]

#: Scheduling margin added to every time bound: the machines running this are loaded.
SLACK = 2.0
#: The longest a call that must not wait on the server may take ("at once").
AT_ONCE = 1.0
#: The bound of any wait on the server that should succeed (opening a pool, a release).
SERVER_WAIT = 10.0

_Test = TypeVar("_Test", bound=Callable[..., Any])
Drv = Driver[Any, Any, Any]

_app_names = itertools.count(1)
log = logging.getLogger(__name__)


class DriverSuiteAdapter(SqlRunner, Protocol):
    """What the suite needs from a plugin besides the :class:`~hasql_core.driver.Driver` itself.

    ``fetchval`` and ``execute`` (from :class:`~hasql_core.testing.conformance.SqlRunner`) run SQL
    on a connection the driver handed out: ``fetchval`` returns the first column of the first row
    (it may leave a transaction open, as the library does by default); ``execute`` runs a
    statement (possibly several separated by ``;``, no parameters) and commits it.
    """

    @property
    def driver_name(self) -> str:
        """The name the driver is registered under (``PoolManager(driver=...)``)."""

    def pool_options(self, min_size: int, max_size: int) -> dict[str, Any]:
        """``pool_factory_kwargs`` for a pool of at least ``min_size`` and at most ``max_size``
        connections, in the library's own words (e.g. ``minsize``/``maxsize`` for aiopg)."""

    async def begin(self, connection: Any, *, read_only: bool = False) -> None:
        """Start a transaction on a connection fresh from the pool; the statements that follow
        (``fetchval``) run in it until the connection is given back, which rolls it back."""


# -- fixtures ----------------------------------------------------------------------------------------


@pytest.fixture
def suite_driver(driver_suite_adapter: DriverSuiteAdapter) -> Drv:
    """A fresh instance of the plugin's driver, made by name through the ``hasql`` entry points."""
    return make_driver(driver_suite_adapter.driver_name)


@pytest.fixture(scope="module")
def suite_cluster(hasql_pg_bindir: Any) -> Iterator[LocalCluster]:
    """One primary and one streaming replica, shared by the tests of the module that leave the
    topology as they found it."""
    with LocalCluster(replicas=1, bindir=hasql_pg_bindir) as cluster:
        yield cluster


@pytest.fixture
def suite_app_name() -> str:
    """An ``application_name`` unique to the test, to find its sessions in ``pg_stat_activity``."""
    return f"hasql-suite-{os.getpid()}-{next(_app_names)}"


def _scenario(timeout: float = 120.0) -> Callable[[_Test], _Test]:
    """Mark a suite test: run by pytest-asyncio, bounded by pytest-timeout."""

    def mark(test: _Test) -> _Test:
        return cast("_Test", pytest.mark.asyncio(pytest.mark.timeout(timeout)(test)))

    return mark


#: A fresh single-node cluster for the test (``hasql_cluster`` fixture).
_one_node = pytest.mark.hasql_cluster(replicas=0)
#: A fresh primary with one replica for the test.
_two_nodes = pytest.mark.hasql_cluster(replicas=1)


# -- helpers -----------------------------------------------------------------------------------------


def _closed_port_dsn() -> Dsn:
    """A DSN for a port on 127.0.0.1 that nothing listens on (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return parse_dsn(f"postgresql://nobody@127.0.0.1:{port}/postgres?connect_timeout=2")


async def _sql(cluster: LocalCluster, node: Node, sql: str) -> list[tuple[str, ...]]:
    """Run ``sql`` on ``node`` as the server's superuser over psql (outside the driver)."""
    return await asyncio.to_thread(cluster.execute, node, sql)


async def _backends(cluster: LocalCluster, node: Node, app_name: str) -> set[int]:
    """Server pids of the client sessions named ``app_name`` on ``node``."""
    return set(await client_backends(cluster, node, app_name))


async def _eventually(
    check: Callable[[], Awaitable[bool]], what: str, timeout: float = SERVER_WAIT
) -> None:
    """Poll ``check`` until it returns True; fail naming ``what`` after ``timeout`` seconds."""
    await eventually(check, what, timeout)


async def _no_backends(cluster: LocalCluster, node: Node, app_name: str) -> None:
    """Wait until no session named ``app_name`` is left on ``node``."""

    async def none_left() -> bool:
        return not await _backends(cluster, node, app_name)

    await _eventually(none_left, f"every session of {app_name} on {node.name} to end")


async def _until_backend_gone(cluster: LocalCluster, node: Node, pid: int) -> None:
    async def gone() -> bool:
        rows = await _sql(cluster, node, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}")
        return rows == [("0",)]

    await _eventually(gone, f"server process {pid} to exit")


async def _until_active(cluster: LocalCluster, node: Node, pid: int) -> None:
    """Wait until session ``pid`` is running a statement."""

    async def active() -> bool:
        rows = await _sql(
            cluster,
            node,
            f"SELECT count(*) FROM pg_stat_activity WHERE pid = {pid} AND state = 'active'",
        )
        return rows == [("1",)]

    await _eventually(active, f"session {pid} to run its statement")


def _client_sockets(port: int) -> int | None:
    """How many TCP sockets of this process are connected (or connecting) to ``port``.

    Read from /proc (Linux): the client-side truth about leaked connections, which a frozen or
    stopped server cannot report. None where /proc has no such tables.
    """
    gc.collect()  # a connection object kept only by a reference cycle is late, not leaked
    inodes: set[str] = set()
    found_table = False
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as table:
                found_table = True
                next(table)
                for line in table:
                    fields = line.split()
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if remote_port == port and fields[3] != "0A":  # 0A: listening
                        inodes.add(fields[9])
        except FileNotFoundError:
            continue
    if not found_table:
        return None
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:[") and target[8:-1] in inodes:
            count += 1
    return count


async def _no_client_socket(port: int, what: str) -> None:
    """Wait until this process has no socket to ``port`` (skipped where /proc cannot tell)."""

    async def none_left() -> bool:
        return _client_sockets(port) in (0, None)

    await _eventually(none_left, f"no socket to port {port} left {what}", timeout=5.0)


async def _no_task_left(before: set[asyncio.Task[Any]], what: str) -> None:
    """Wait until every task started since ``before`` was taken has ended."""

    def left() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}

    async def none_left() -> bool:
        return not left()

    try:
        await _eventually(none_left, what, timeout=5.0)
    except pytest.fail.Exception:
        pytest.fail(f"tasks still running {what}: {left()!r}")


async def _shut(driver: Drv, pool: Any) -> None:
    """Close ``pool`` gracefully, or terminate it when that takes too long (a test that failed
    while holding a connection)."""
    try:
        await asyncio.wait_for(driver.close_pool(pool), 5.0)
    except Exception:
        await asyncio.wait_for(driver.terminate_pool(pool), 5.0)


@contextlib.asynccontextmanager
async def _opened_pool(driver: Drv, dsn: Dsn, options: Mapping[str, Any]) -> AsyncIterator[Any]:
    """A pool made and opened by ``driver``, closed (or terminated) at the end."""
    pool = driver.create_pool(dsn, options)
    try:
        await asyncio.wait_for(driver.open_pool(pool), SERVER_WAIT)
        yield pool
    finally:
        await _shut(driver, pool)


async def _error_of(awaitable: Awaitable[Any]) -> BaseException:
    """The exception ``awaitable`` raises (failing the test when it raises none)."""
    try:
        await awaitable
    except Exception as error:
        return error
    pytest.fail("expected an exception")


async def _pid(adapter: DriverSuiteAdapter, connection: Any) -> int:
    return int(await adapter.fetchval(connection, "SELECT pg_backend_pid()"))


async def _thawed(cluster: LocalCluster, node: Node) -> None:
    if node.state == "frozen":
        await asyncio.to_thread(cluster.thaw, node)


# == monitor connection and probe ==================================================================


@_scenario()
async def test_probe_row_has_plain_python_types(
    suite_driver: Drv, suite_cluster: LocalCluster
) -> None:
    """The probe row comes back as a tuple-like sequence of bool, int, float and None, in column
    order, on a primary and on a standby."""
    driver = suite_driver
    await _sql(suite_cluster, suite_cluster.primary, "SELECT txid_current()")  # a replayed xact
    await asyncio.to_thread(suite_cluster.wait_replayed)
    for node, in_recovery in ((suite_cluster.primary, False), (suite_cluster.replicas[0], True)):
        monitor = await driver.connect_monitor(_dsn(node), 5.0)
        try:
            row = tuple(await driver.probe(monitor, PROBE_QUERY))
        finally:
            await driver.close_monitor(monitor)
        assert len(row) == 6
        recovery, read_only, wal_lsn, receive_lsn, replay_age, timeline = row
        assert (type(recovery), type(read_only)) == (bool, bool)
        assert recovery is in_recovery
        assert type(wal_lsn) is int
        assert type(timeline) is int
        if in_recovery:
            assert type(receive_lsn) is int
            assert type(replay_age) is float
        else:
            assert (receive_lsn, replay_age) == (None, None)


@_scenario()
async def test_query_row_on_a_handed_out_connection_reads_the_primary_position(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """``query_row`` runs one core query on a connection handed out by ``acquire`` (causal
    sessions read the primary's WAL position that way after a write): ints in column order on the
    primary, an error on a standby (the position functions fail during recovery), and the
    connection stays usable and releasable."""
    from ..causal import POSITION_QUERY

    driver, adapter = suite_driver, driver_suite_adapter
    async with _opened_pool(
        driver, _dsn(suite_cluster.primary), adapter.pool_options(1, 1)
    ) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            lsn, timeline = tuple(await asyncio.wait_for(driver.query_row(conn, POSITION_QUERY), 5))
            assert (type(lsn), type(timeline)) == (int, int)
            assert lsn > 0 and timeline >= 1
        finally:
            await asyncio.wait_for(driver.release(pool, conn), 5)
    replica = suite_cluster.replicas[0]
    async with _opened_pool(driver, _dsn(replica), adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            error = await _error_of(asyncio.wait_for(driver.query_row(conn, POSITION_QUERY), 5))
            assert not isinstance(error, asyncio.TimeoutError), "the standby did not answer"
            assert driver.classify_error(error) is ErrorKind.OTHER, repr(error)
        finally:
            await asyncio.wait_for(driver.release(pool, conn), 5)


@_scenario()
async def test_probe_tells_primary_from_standby_and_follows_replay(
    suite_driver: Drv, suite_cluster: LocalCluster
) -> None:
    """A primary probes as writable on timeline 1 and its WAL position moves with a write; the
    standby probes as in recovery, read-only, and its replay reaches the primary's position."""
    driver = suite_driver
    primary = await driver.connect_monitor(_dsn(suite_cluster.primary), 5.0)
    standby = await driver.connect_monitor(_dsn(suite_cluster.replicas[0]), 5.0)
    try:
        before = parse_probe_row(await driver.probe(primary, PROBE_QUERY))
        assert (before.in_recovery, before.read_only, before.timeline) == (False, False, 1)
        assert before.wal_lsn is not None and before.wal_lsn > 0
        assert (before.receive_lsn, before.replay_age) == (None, None)

        await _sql(
            suite_cluster,
            suite_cluster.primary,
            "CREATE TABLE IF NOT EXISTS hasql_suite_probe (id int); "
            "INSERT INTO hasql_suite_probe VALUES (1)",
        )
        written = parse_probe_row(await driver.probe(primary, PROBE_QUERY)).wal_lsn
        assert written is not None and written > before.wal_lsn

        async def replayed() -> bool:
            state = parse_probe_row(await driver.probe(standby, PROBE_QUERY))
            return state.wal_lsn is not None and state.wal_lsn >= written

        await _eventually(replayed, "the standby to replay the write")
        state = parse_probe_row(await driver.probe(standby, PROBE_QUERY))
        assert (state.in_recovery, state.read_only, state.timeline) == (True, True, 1)
        assert state.receive_lsn is not None and state.receive_lsn >= written
        assert state.replay_age is not None and state.replay_age >= 0.0
    finally:
        await driver.close_monitor(primary)
        await driver.close_monitor(standby)


@_scenario()
async def test_monitor_connection_stays_out_of_transactions_and_close_ends_the_session(
    suite_driver: Drv, suite_cluster: LocalCluster, suite_app_name: str
) -> None:
    """After a probe the monitor's session is ``idle`` (autocommit: never ``idle in transaction``,
    which would pin an old snapshot); ``close_monitor`` ends the session on the server."""
    driver = suite_driver
    node = suite_cluster.primary
    monitor = await driver.connect_monitor(_dsn(node, application_name=suite_app_name), 5.0)
    try:
        (pid,) = await driver.probe(monitor, "SELECT pg_backend_pid()")
        await driver.probe(monitor, PROBE_QUERY)
        rows = await _sql(
            suite_cluster, node, f"SELECT state FROM pg_stat_activity WHERE pid = {int(pid)}"
        )
        assert rows == [("idle",)]
        assert await _backends(suite_cluster, node, suite_app_name) == {int(pid)}
    finally:
        await driver.close_monitor(monitor)
    await _no_backends(suite_cluster, node, suite_app_name)


@_scenario()
async def test_monitor_and_pool_reach_a_standby_whatever_target_session_attrs_says(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """``target_session_attrs=read-write`` in the user's DSN does not stop the monitor or a pool
    from connecting to a standby: the core, not the library, picks hosts by role."""
    driver = suite_driver
    dsn = _dsn(suite_cluster.replicas[0], target_session_attrs="read-write")
    monitor = await driver.connect_monitor(dsn, 5.0)
    try:
        assert parse_probe_row(await driver.probe(monitor, PROBE_QUERY)).in_recovery is True
    finally:
        await driver.close_monitor(monitor)
    async with _opened_pool(driver, dsn, driver_suite_adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            assert await driver_suite_adapter.fetchval(conn, "SELECT pg_is_in_recovery()") is True
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_paused_replay_shows_receive_position_ahead_of_replay(
    suite_driver: Drv, suite_cluster: LocalCluster
) -> None:
    """With replay paused the standby's receive position passes a new write while its replay
    position stays behind; once resumed, replay catches up (what lag limits are computed from)."""
    driver = suite_driver
    replica = suite_cluster.replicas[0]
    monitor = await driver.connect_monitor(_dsn(replica), 5.0)
    await asyncio.to_thread(suite_cluster.pause_replay, replica)
    try:
        await _sql(
            suite_cluster,
            suite_cluster.primary,
            "CREATE TABLE IF NOT EXISTS hasql_suite_paused (id int); "
            "INSERT INTO hasql_suite_paused VALUES (1)",
        )
        rows = await _sql(  # after the commit: the write's commit record is before this point
            suite_cluster,
            suite_cluster.primary,
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint",
        )
        written = int(rows[0][0])

        async def received() -> bool:
            state = parse_probe_row(await driver.probe(monitor, PROBE_QUERY))
            return state.receive_lsn is not None and state.receive_lsn >= written

        await _eventually(received, "the standby to receive the write")
        state = parse_probe_row(await driver.probe(monitor, PROBE_QUERY))
        assert state.wal_lsn is not None and state.wal_lsn < written  # replay stands still
    finally:
        await asyncio.to_thread(suite_cluster.resume_replay, replica)
    try:

        async def replayed() -> bool:
            state = parse_probe_row(await driver.probe(monitor, PROBE_QUERY))
            return state.wal_lsn is not None and state.wal_lsn >= written

        await _eventually(replayed, "replay to catch up after resuming")
    finally:
        await driver.close_monitor(monitor)


@_scenario()
@_two_nodes
async def test_probe_sees_promotion_on_the_same_monitor_connection(
    suite_driver: Drv, hasql_cluster: LocalCluster
) -> None:
    """The first probe after a promotion, on the monitor connection opened before it, sees a
    writable primary on timeline 2 (hasql 0.9 probed inside a transaction and kept seeing a
    read-only standby); the old primary still probes as primary on timeline 1."""
    driver = suite_driver
    old_primary, replica = hasql_cluster.primary, hasql_cluster.replicas[0]
    on_old = await driver.connect_monitor(_dsn(old_primary), 5.0)
    on_replica = await driver.connect_monitor(_dsn(replica), 5.0)
    try:
        before = parse_probe_row(await driver.probe(on_replica, PROBE_QUERY))
        assert (before.in_recovery, before.read_only, before.timeline) == (True, True, 1)

        await asyncio.to_thread(hasql_cluster.promote, replica)  # returns once out of recovery

        after = parse_probe_row(await driver.probe(on_replica, PROBE_QUERY))
        assert (after.in_recovery, after.read_only, after.timeline) == (False, False, 2)
        assert after.receive_lsn is None
        assert after.wal_lsn is not None and before.wal_lsn is not None
        assert after.wal_lsn >= before.wal_lsn
        old = parse_probe_row(await driver.probe(on_old, PROBE_QUERY))
        assert (old.in_recovery, old.timeline) == (False, 1)
    finally:
        await driver.close_monitor(on_old)
        await driver.close_monitor(on_replica)


@_scenario()
@_one_node
async def test_connect_monitor_to_frozen_host_is_bounded_by_timeout_and_cancellation(
    suite_driver: Drv, hasql_cluster: LocalCluster
) -> None:
    """On a frozen host (the kernel accepts the TCP connection, the server never answers)
    ``connect_monitor`` fails within its ``timeout``, returns at once when cancelled (as the core
    does at its deadline), and leaves no socket to the host."""
    driver = suite_driver
    node = hasql_cluster.primary
    loop = asyncio.get_running_loop()
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        started = loop.time()
        with pytest.raises(Exception):  # noqa: B017 - the contract names no type: any failure
            await asyncio.wait_for(driver.connect_monitor(_dsn(node), 0.5), 0.5 + 30)
        took = loop.time() - started
        assert took < 0.5 + SLACK, f"connect_monitor(timeout=0.5) took {took:.2f}s"
        await _no_client_socket(node.port, "after the timed-out connect")

        started = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.connect_monitor(_dsn(node), 30.0), 0.3)
        took = loop.time() - started
        assert took < 0.3 + SLACK, f"a cancelled connect_monitor took {took:.2f}s to return"
        await _no_client_socket(node.port, "after the cancelled connect")
    finally:
        await _thawed(hasql_cluster, node)
    monitor = await driver.connect_monitor(_dsn(node), 5.0)  # once thawed, it answers again
    try:
        assert parse_probe_row(await driver.probe(monitor, PROBE_QUERY)).in_recovery is False
    finally:
        await driver.close_monitor(monitor)


@_scenario()
@_one_node
async def test_probe_and_close_monitor_on_frozen_host_return_at_once(
    suite_driver: Drv, hasql_cluster: LocalCluster
) -> None:
    """A probe on a frozen host, cancelled at the core's deadline, returns at once (libraries
    that try to cancel the query on the server first would wait for it); ``close_monitor`` then
    returns at once too, and no socket or background task is left."""
    driver = suite_driver
    node = hasql_cluster.primary
    loop = asyncio.get_running_loop()
    tasks_before = asyncio.all_tasks()
    monitor = await driver.connect_monitor(_dsn(node), 5.0)
    await driver.probe(monitor, PROBE_QUERY)
    await asyncio.to_thread(hasql_cluster.freeze, node)
    try:
        started = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.probe(monitor, PROBE_QUERY), 0.3)
        took = loop.time() - started
        assert took < 0.3 + AT_ONCE, f"the cancelled probe took {took:.2f}s to return"
        started = loop.time()
        await asyncio.wait_for(driver.close_monitor(monitor), 0.5 + SLACK)
        took = loop.time() - started
        assert took < AT_ONCE, f"close_monitor took {took:.2f}s on a frozen host"
        await _no_client_socket(node.port, "after close_monitor")
        await _no_task_left(tasks_before, "after close_monitor")
    finally:
        await _thawed(hasql_cluster, node)


@_scenario()
@_one_node
async def test_probe_on_stopped_server_and_connect_to_it_are_connection_lost(
    suite_driver: Drv, hasql_cluster: LocalCluster
) -> None:
    """A probe on a server stopped meanwhile fails as CONNECTION_LOST (57P01 or a closed
    connection), and connecting to it while it is down (refused) is CONNECTION_LOST too."""
    driver = suite_driver
    node = hasql_cluster.primary
    monitor = await driver.connect_monitor(_dsn(node), 5.0)
    try:
        await asyncio.to_thread(hasql_cluster.stop, node, "immediate")
        error = await _error_of(asyncio.wait_for(driver.probe(monitor, PROBE_QUERY), SERVER_WAIT))
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST, repr(error)
    finally:
        await driver.close_monitor(monitor)
    refused = await _error_of(driver.connect_monitor(_dsn(node), 5.0))
    assert driver.error_facts(refused) == ErrorFacts(connection_lost=True), repr(refused)


# == pools ==========================================================================================


@_scenario()
async def test_pool_sizes_and_stats_are_exactly_what_the_user_asked(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``create_pool`` does no I/O (no session, no task) and never modifies the options; an open
    pool holds ``min_size`` sessions, grows to exactly ``max_size`` and no further; ``pool_stats``
    and ``free_size`` say so at every step."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    options = adapter.pool_options(2, 4)
    snapshot = copy.deepcopy(options)
    tasks_before = asyncio.all_tasks()
    pool = driver.create_pool(_dsn(node, application_name=suite_app_name), options)
    held: list[Any] = []
    try:
        assert asyncio.all_tasks() == tasks_before, "create_pool started a task"
        assert await _backends(suite_cluster, node, suite_app_name) == set()
        assert options == snapshot

        await asyncio.wait_for(driver.open_pool(pool), SERVER_WAIT)
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=2, idle=2, in_use=0)
        assert driver.free_size(pool) == 4
        assert len(await _backends(suite_cluster, node, suite_app_name)) == 2

        held.append(await driver.acquire(pool, 5.0))
        stats = driver.pool_stats(pool)
        assert stats == PoolStats(min=2, max=4, size=2, idle=1, in_use=1)
        assert stats.free == driver.free_size(pool) == 3
        await driver.release(pool, held.pop())
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=2, idle=2, in_use=0)

        held.extend([await driver.acquire(pool, 5.0) for _ in range(4)])
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=4, idle=0, in_use=4)
        assert driver.free_size(pool) == 0
        with pytest.raises(asyncio.TimeoutError):  # the core cancels at its deadline
            await asyncio.wait_for(driver.acquire(pool, 0.3), 0.5)
        pids = {await _pid(adapter, conn) for conn in held}
        assert len(pids) == 4
        assert await _backends(suite_cluster, node, suite_app_name) == pids
        assert driver.pool_stats(pool).in_use == 4

        while held:
            await driver.release(pool, held.pop())
        assert driver.pool_stats(pool) == PoolStats(min=2, max=4, size=4, idle=4, in_use=0)
        assert driver.free_size(pool) == 4
        assert options == snapshot
    finally:
        for conn in held:
            driver.discard(pool, conn)
        await _shut(driver, pool)
    await _no_backends(suite_cluster, node, suite_app_name)
    assert options == snapshot


@_scenario()
async def test_dsn_settings_reach_the_server(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``application_name`` and ``options=-c ...`` in the DSN reach the pool's sessions."""
    driver, adapter = suite_driver, driver_suite_adapter
    dsn = _dsn(
        suite_cluster.primary,
        application_name=suite_app_name,
        options="-c statement_timeout=4321 -c work_mem=7MB",
    )
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            assert await adapter.fetchval(conn, "SHOW application_name") == suite_app_name
            assert await adapter.fetchval(conn, "SHOW statement_timeout") == "4321ms"
            assert await adapter.fetchval(conn, "SHOW work_mem") == "7MB"
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_unix_socket_dsn_connects(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """``host=/socket/dir`` connects over the Unix socket (``inet_server_addr()`` is NULL)."""
    driver, adapter = suite_driver, driver_suite_adapter
    node = suite_cluster.primary
    tcp = _dsn(node)
    socket_dsn = parse_dsn(
        f"host={node.socket_dir} port={node.port} user={tcp.user} "
        f"password={tcp.password} dbname={tcp.database}"
    )
    async with _opened_pool(driver, socket_dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            assert await adapter.fetchval(conn, "SELECT inet_server_addr()") is None
            assert await adapter.fetchval(conn, "SELECT current_user") == tcp.user
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_close_pool_waits_for_handed_out_connections(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``close_pool`` does not return while a connection is handed out, which stays usable; once
    it is released the close completes and every session ends."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    pool = driver.create_pool(
        _dsn(node, application_name=suite_app_name), adapter.pool_options(2, 2)
    )
    await asyncio.wait_for(driver.open_pool(pool), SERVER_WAIT)
    conn = await driver.acquire(pool, 5.0)
    closing = asyncio.ensure_future(driver.close_pool(pool))
    try:
        done, _ = await asyncio.wait({closing}, timeout=0.3)
        assert not done, "close_pool returned while a connection was still handed out"
        assert await adapter.fetchval(conn, "SELECT 42") == 42
        await driver.release(pool, conn)
        await asyncio.wait_for(closing, SERVER_WAIT)
    finally:
        if not closing.done():
            closing.cancel()
            await driver.terminate_pool(pool)
    await _no_backends(suite_cluster, node, suite_app_name)


@_scenario()
async def test_terminate_pool_closes_handed_out_connections_at_once(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``terminate_pool`` returns at once and closes every connection, handed-out ones included:
    a statement running on one fails at once as CONNECTION_LOST, and every session ends."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    # The server notices a client gone within 100 ms even while it runs a statement.
    dsn = _dsn(
        node, application_name=suite_app_name, options="-c client_connection_check_interval=100"
    )
    pool = driver.create_pool(dsn, adapter.pool_options(3, 3))
    await asyncio.wait_for(driver.open_pool(pool), SERVER_WAIT)
    loop = asyncio.get_running_loop()
    busy = await driver.acquire(pool, 5.0)
    idle = await driver.acquire(pool, 5.0)
    busy_pid = await _pid(adapter, busy)
    running = asyncio.ensure_future(adapter.fetchval(busy, "SELECT pg_sleep(60)"))
    try:
        await _until_active(suite_cluster, node, busy_pid)
        started = loop.time()
        await asyncio.wait_for(driver.terminate_pool(pool), 5.0)
        assert loop.time() - started < AT_ONCE
        error = await _error_of(asyncio.wait_for(running, AT_ONCE + SLACK))
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST, repr(error)
        assert driver.is_connection_closed(busy)
        assert driver.is_connection_closed(idle)
    finally:
        running.cancel()
        await driver.terminate_pool(pool)
    await _no_backends(suite_cluster, node, suite_app_name)


@_scenario()
async def test_expire_idle_hands_out_no_connection_opened_before(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """After ``expire_idle`` (the host stopped being primary) no connection opened before it is
    handed out again, idle or handed out at the time, and their sessions end."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(2, 3)) as pool:
        out = await driver.acquire(pool, 5.0)
        old = await _backends(suite_cluster, node, suite_app_name)
        assert len(old) == 2
        await driver.expire_idle(pool)
        await driver.release(pool, out)
        held = [await driver.acquire(pool, 5.0) for _ in range(3)]
        try:
            pids = {await _pid(adapter, conn) for conn in held}
            assert len(pids) == 3
            assert not pids & old, "a connection opened before expire_idle was handed out"

            async def old_sessions_ended() -> bool:
                return not await _backends(suite_cluster, node, suite_app_name) & old

            await _eventually(old_sessions_ended, "the sessions opened before to end")
        finally:
            for conn in held:
                await driver.release(pool, conn)


@_scenario()
async def test_idle_connection_ended_by_the_server_is_not_handed_out(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """A pooled idle connection whose session the server ended (``pg_terminate_backend``, as a
    restart or failover does) is not handed out: every connection handed out works."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(2, 2)) as pool:
        first = min(await _backends(suite_cluster, node, suite_app_name))
        await _sql(suite_cluster, node, f"SELECT pg_terminate_backend({first})")
        await _until_backend_gone(suite_cluster, node, first)
        for _ in range(3):
            conn = await driver.acquire(pool, 5.0)
            try:
                assert await _pid(adapter, conn) != first
            finally:
                await driver.release(pool, conn)


# == cancellation and failed opens =================================================================


@_scenario(timeout=180)
async def test_acquires_and_releases_cancelled_at_random_leave_nothing_checked_out(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """Tasks cancelled at random points (queued in ``acquire``, connecting, holding, running a
    statement, in ``release``) lose no connection: afterwards nothing is checked out, every slot
    can be taken, and the server has exactly the pool's sessions. A task whose statement is
    cancelled discards the connection, as the core does; a cancelled ``release`` is left alone:
    every driver coroutine must be cancellation-safe on its own."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    max_size = 3
    rng = random.Random(20261202)
    dsn = _dsn(node, application_name=suite_app_name)
    completed = 0

    async with _opened_pool(driver, dsn, adapter.pool_options(0, max_size)) as pool:

        async def user(query: bool) -> None:
            nonlocal completed
            conn = await driver.acquire(pool, 10.0)
            try:
                if query:
                    await adapter.fetchval(conn, "SELECT 1")
                else:
                    await asyncio.sleep(0)
            except asyncio.CancelledError:
                driver.discard(pool, conn)  # the statement was interrupted: never reset it
                raise
            await driver.release(pool, conn)
            completed += 1

        loop = asyncio.get_running_loop()
        for round_ in range(150):
            tasks = [asyncio.ensure_future(user(round_ % 4 == 0)) for _ in range(8)]
            for task in tasks:
                if rng.random() < 0.6:
                    loop.call_later(rng.random() * 0.003, task.cancel)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(r is None or isinstance(r, asyncio.CancelledError) for r in results), results
        assert completed > 0

        async def settled() -> bool:
            stats = driver.pool_stats(pool)
            return stats.in_use == 0 and stats.size <= max_size

        await _eventually(settled, "nothing checked out")
        held = [await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT) for _ in range(3)]
        try:
            assert driver.pool_stats(pool).in_use == max_size
            pids = {await _pid(adapter, conn) for conn in held}
            assert len(pids) == max_size

            async def exactly_the_pool() -> bool:
                return await _backends(suite_cluster, node, suite_app_name) == pids

            await _eventually(exactly_the_pool, "the server to have exactly the pool's sessions")
        finally:
            for conn in held:
                await driver.release(pool, conn)
    await _no_backends(suite_cluster, node, suite_app_name)


@_scenario()
async def test_cancelled_release_leaves_nothing_checked_out(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``release`` cancelled right after it started (with a transaction to roll back) still
    gives the connection back: ``in_use`` returns to 0 and every slot can be taken again."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        for yields in range(1, 5):  # cancelled at successive points of the started release
            conn = await driver.acquire(pool, 5.0)
            await adapter.begin(conn)
            await adapter.fetchval(conn, "SELECT 1")
            releasing = asyncio.ensure_future(driver.release(pool, conn))
            for _ in range(yields):
                await asyncio.sleep(0)
            releasing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(releasing, SERVER_WAIT)

            async def returned() -> bool:
                return driver.pool_stats(pool).in_use == 0

            await _eventually(returned, "the cancelled release to give the connection back")
            again = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
            try:
                assert await adapter.fetchval(again, "SELECT 1") == 1
            finally:
                await driver.release(pool, again)


@_scenario()
async def test_failed_open_on_closed_port_then_terminate_leaves_nothing(
    suite_driver: Drv, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """``open_pool`` on a port nothing listens on fails (with a CONNECTION_LOST error, or at the
    core's deadline); ``terminate_pool`` then leaves no task and no socket."""
    driver = suite_driver
    dsn = _closed_port_dsn()
    tasks_before = asyncio.all_tasks()
    pool = driver.create_pool(dsn, driver_suite_adapter.pool_options(1, 1))
    error = await _error_of(asyncio.wait_for(driver.open_pool(pool), 1.0))
    if not isinstance(error, asyncio.TimeoutError):
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST, repr(error)
    await asyncio.wait_for(driver.terminate_pool(pool), 5.0)
    await _no_task_left(tasks_before, "after terminating a pool that failed to open")
    await _no_client_socket(dsn.hosts[0].port, "after terminating a pool that failed to open")


@_scenario()
async def test_cancelled_open_leaves_no_server_session(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``open_pool`` cancelled at several points of its connecting, then ``terminate_pool`` (what
    the core does at its deadline), leaves no session on the server and no task."""
    driver, node = suite_driver, suite_cluster.primary
    tasks_before = asyncio.all_tasks()
    for delay in (0.0, 0.001, 0.003, 0.01, 0.03):
        pool = driver.create_pool(
            _dsn(node, application_name=suite_app_name), driver_suite_adapter.pool_options(3, 3)
        )
        opening = asyncio.ensure_future(driver.open_pool(pool))
        await asyncio.sleep(delay)  # the point at which the core's deadline cancels the open
        opening.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(opening, SERVER_WAIT)  # completed before the cancel: fine
        await asyncio.wait_for(driver.terminate_pool(pool), 5.0)
    await _no_backends(suite_cluster, node, suite_app_name)
    await _no_task_left(tasks_before, "after cancelled opens")


@_scenario()
@_one_node
async def test_cancelled_open_on_frozen_host_leaves_no_socket_and_no_task(
    suite_driver: Drv,
    hasql_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
) -> None:
    """``open_pool`` on a frozen host, cancelled at the core's deadline, returns at once; after
    ``terminate_pool`` no connection attempt is left running and no socket is left open."""
    driver, node = suite_driver, hasql_cluster.primary
    loop = asyncio.get_running_loop()
    tasks_before = asyncio.all_tasks()
    pool = driver.create_pool(
        _dsn(node, connect_timeout="30"), driver_suite_adapter.pool_options(2, 2)
    )
    await asyncio.to_thread(hasql_cluster.freeze, node)
    # Libraries log abandoned attempts with the exception as an argument, and pytest keeps log
    # records (so the exception, its frames and the half-made connection) until the test ends.
    # Without a record nothing holds them, as in an application: that is what is checked here.
    logging.disable(logging.CRITICAL)
    try:
        started = loop.time()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(driver.open_pool(pool), 0.5)
        took = loop.time() - started
        assert took < 0.5 + SLACK, f"the cancelled open took {took:.2f}s to return"
        await asyncio.wait_for(driver.terminate_pool(pool), 5.0)
        await _no_task_left(tasks_before, "after terminating the pool")
        await _no_client_socket(node.port, "after terminating the pool")
    finally:
        logging.disable(logging.NOTSET)
        await _thawed(hasql_cluster, node)
    await _no_client_socket(node.port, "after the thaw")


# == release and discard under faults ==============================================================


@_scenario()
@_one_node
async def test_discard_on_frozen_host_returns_at_once_and_frees_the_slot(
    suite_driver: Drv,
    hasql_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``discard`` is synchronous and does no I/O: on a frozen host it returns at once and
    ``in_use`` goes down at once; after the thaw all ``max_size`` connections can be had (the
    slot was freed), none of them is the discarded one, and its server session has ended."""
    driver, adapter, node = suite_driver, driver_suite_adapter, hasql_cluster.primary
    loop = asyncio.get_running_loop()
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 2)) as pool:
        doomed = await driver.acquire(pool, 5.0)
        kept = await driver.acquire(pool, 5.0)
        doomed_pid = await _pid(adapter, doomed)
        assert driver.pool_stats(pool).in_use == 2
        await asyncio.to_thread(hasql_cluster.freeze, node)
        try:
            started = loop.time()
            driver.discard(pool, doomed)
            took = loop.time() - started
            assert took < AT_ONCE, f"discard took {took:.2f}s on a frozen host"
            assert driver.pool_stats(pool).in_use == 1
            assert driver.free_size(pool) == 1
            assert driver.is_connection_closed(doomed)
        finally:
            await _thawed(hasql_cluster, node)
        await driver.release(pool, kept)
        held = [await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT) for _ in range(2)]
        try:
            assert driver.pool_stats(pool).in_use == 2
            pids = {await _pid(adapter, conn) for conn in held}
            assert doomed_pid not in pids
        finally:
            for conn in held:
                await driver.release(pool, conn)
        await _until_backend_gone(hasql_cluster, node, doomed_pid)


@_scenario()
@_one_node
async def test_statement_abandoned_on_frozen_host_ends_soon_after_its_deadline(
    suite_driver: Drv,
    hasql_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """A statement on a handed-out connection, abandoned at the application's own deadline
    (``asyncio.wait_for``) while the host is frozen, ends soon after that deadline (a bounded
    cancel request is fine; psycopg alone waits about ten seconds on the unresponsive server
    before letting the caller go). The core then discards the connection, which frees the
    slot."""
    driver, adapter, node = suite_driver, driver_suite_adapter, hasql_cluster.primary
    loop = asyncio.get_running_loop()
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        pid = await _pid(adapter, conn)
        await asyncio.to_thread(hasql_cluster.freeze, node)
        try:
            started = loop.time()
            statement = asyncio.ensure_future(adapter.fetchval(conn, "SELECT 1"))
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(statement, 0.5)
            took = loop.time() - started
            driver.discard(pool, conn)
            assert took < 0.5 + SLACK, f"the abandoned statement took {took:.2f}s to give up"
            assert driver.pool_stats(pool).in_use == 0
        finally:
            await _thawed(hasql_cluster, node)
        again = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
        try:
            assert await _pid(adapter, again) != pid
        finally:
            await driver.release(pool, again)
        await _until_backend_gone(hasql_cluster, node, pid)


@_scenario()
@_one_node
async def test_discard_during_release_in_flight_on_frozen_host_ends_it_and_keeps_the_slot(
    suite_driver: Drv,
    hasql_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """A release that waits on a frozen host (rolling back an open transaction) ends promptly
    once the same connection is discarded, as the core does when its release bound passes; the
    slot is not lost (``max_size`` connections after the thaw) and the discarded connection is not
    handed out again."""
    driver, adapter, node = suite_driver, driver_suite_adapter, hasql_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        await adapter.begin(conn)
        pid = await _pid(adapter, conn)
        await asyncio.to_thread(hasql_cluster.freeze, node)
        try:
            releasing = asyncio.ensure_future(driver.release(pool, conn))
            done, _ = await asyncio.wait({releasing}, timeout=0.5)
            in_flight = not done
            driver.discard(pool, conn)
            # It may end with an error of the library: the core no longer waits for it.
            finished, _ = await asyncio.wait({releasing}, timeout=AT_ONCE + SLACK)
            assert finished, "the release was still waiting on the frozen host after discard"
            if not releasing.cancelled():
                releasing.exception()  # retrieved: whatever it is, the core ignores it
            assert driver.pool_stats(pool).in_use == 0
        finally:
            await _thawed(hasql_cluster, node)
        again = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
        try:
            assert await adapter.fetchval(again, "SELECT 1") == 1
            if in_flight:
                assert again is not conn, "the discarded connection was handed out again"
                assert await _pid(adapter, again) != pid
        finally:
            await driver.release(pool, again)
        if in_flight:
            await _until_backend_gone(hasql_cluster, node, pid)
        else:  # the driver finished the release without the server: nothing was in flight
            log.warning("the release of an open transaction returned while the host was frozen")


@_scenario()
async def test_discard_of_released_or_broken_connection_does_nothing_and_never_raises(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``discard`` of a connection already released, or already discarded, does nothing (the
    pooled connection keeps working); ``discard`` of a connection whose session the server ended
    does not raise and frees its slot."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        pid = await _pid(adapter, conn)
        await driver.release(pool, conn)
        driver.discard(pool, conn)
        assert driver.pool_stats(pool).in_use == 0
        conn = await driver.acquire(pool, 5.0)
        try:
            assert await _pid(adapter, conn) == pid, "discard after release closed the connection"
        finally:
            await driver.release(pool, conn)

        conn = await driver.acquire(pool, 5.0)
        driver.discard(pool, conn)
        driver.discard(pool, conn)
        assert driver.pool_stats(pool).in_use == 0

        conn = await driver.acquire(pool, 5.0)
        pid = await _pid(adapter, conn)
        await _sql(suite_cluster, node, f"SELECT pg_terminate_backend({pid})")
        await _until_backend_gone(suite_cluster, node, pid)
        await _error_of(adapter.fetchval(conn, "SELECT 1"))
        driver.discard(pool, conn)
        assert driver.pool_stats(pool).in_use == 0
        conn = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
        try:
            assert await adapter.fetchval(conn, "SELECT 1") == 1
        finally:
            await driver.release(pool, conn)


def _frozen_primary_manager(
    cluster: LocalCluster, adapter: DriverSuiteAdapter, app_name: str, **kwargs: Any
) -> PoolManager:
    options: dict[str, Any] = {
        "refresh_delay": 30.0,  # the monitor does not notice the freeze during the test
        "refresh_timeout": 1.0,  # and so the release bound is 1 s
        "acquire_timeout": 2.0,
        "pool_factory_kwargs": adapter.pool_options(1, 2),
        **kwargs,
    }
    dsn = cluster.primary.dsn + f"?application_name={app_name}"
    return PoolManager(dsn, driver=adapter.driver_name, **options)


def _in_use(pm: PoolManager) -> int:
    return sum(pm.driver.pool_stats(pool).in_use for pool in pm.pools)


async def _close_after_thaw(pm: PoolManager, cluster: LocalCluster, app_name: str) -> None:
    """Thaw the primary, close the manager (bounded), and check nothing is left on the server."""
    await _thawed(cluster, cluster.primary)
    await asyncio.wait_for(pm.close(), SERVER_WAIT + SLACK)
    await _no_backends(cluster, cluster.primary, app_name)


@_scenario()
@_one_node
async def test_async_with_left_after_a_statement_timeout_on_frozen_primary_is_bounded(
    hasql_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter, suite_app_name: str
) -> None:
    """An application-style loop (``async with pm.acquire_master()``, one statement bounded by
    ``asyncio.wait_for(..., 1)``) while the primary is frozen: every block whose statement timed
    out is left within the release bound (``refresh_timeout`` = 1 s) plus slack, the loop never
    waits on the frozen host longer than its own bounds, and nothing stays checked out."""
    adapter = driver_suite_adapter
    cluster = hasql_cluster
    loop = asyncio.get_running_loop()
    pm = _frozen_primary_manager(cluster, adapter, suite_app_name, refresh_delay=2.0)
    try:
        await pm.ready(masters_count=1, replicas_count=0, timeout=SERVER_WAIT)
        await asyncio.to_thread(cluster.freeze, cluster.primary)
        statement, release_bound, acquire_timeout = 1.0, 1.0, 2.0
        timed_out_blocks = 0
        frozen_since = loop.time()
        while loop.time() - frozen_since < 5.0:
            started = loop.time()
            statement_started: float | None = None
            statement_ended: float | None = None
            try:
                async with pm.acquire_master(timeout=acquire_timeout) as conn:
                    statement_started = loop.time()
                    try:
                        await asyncio.wait_for(adapter.fetchval(conn, "SELECT 1"), statement)
                    except asyncio.TimeoutError:
                        statement_ended = loop.time()
                        raise
            except AcquireTimeoutError:
                pass
            except asyncio.TimeoutError:
                assert statement_started is not None and statement_ended is not None
                left = loop.time() - statement_ended
                assert left < release_bound + SLACK, f"leaving async with took {left:.2f}s"
                gave_up = statement_ended - statement_started
                assert gave_up < statement + SLACK, (
                    f"the statement bounded by wait_for(..., {statement:g}) took {gave_up:.2f}s "
                    "to give up (see test_statement_abandoned_on_frozen_host_ends_soon_after_...)"
                )
                timed_out_blocks += 1
            took = loop.time() - started
            bound = acquire_timeout + statement + release_bound + SLACK
            assert took < bound, f"one iteration took {took:.2f}s (bound {bound:g}s)"
        assert timed_out_blocks >= 1, "no statement ever ran on the frozen primary"
        assert _in_use(pm) == 0
    finally:
        await _close_after_thaw(pm, cluster, suite_app_name)


async def _until_release_cut_off(pm: PoolManager, within_seconds: float) -> None:
    """Wait until a release on the first host was cut off by ``release_timeout``."""

    async def cut_off() -> bool:
        return pm.metrics().hosts[0].errors.get("release_timeout") == 1

    await _eventually(cut_off, "a release cut off by release_timeout", within_seconds)


@_scenario()
@_one_node
async def test_release_of_open_transaction_on_frozen_primary_is_bounded(
    hasql_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter, suite_app_name: str
) -> None:
    """Leaving ``async with`` normally with a transaction open, while the primary is frozen
    (the rollback cannot be answered), returns within the release bound plus slack, and the
    connection is not left checked out. With a driver whose release finishes in the background
    (``release_in_background``) the block is left at once, and the connection is back in its
    pool's count (discarded) once the release bound has passed."""
    adapter = driver_suite_adapter
    cluster = hasql_cluster
    loop = asyncio.get_running_loop()
    pm = _frozen_primary_manager(cluster, adapter, suite_app_name)
    background = pm.driver.release_in_background
    try:
        await pm.ready(masters_count=1, replicas_count=0, timeout=SERVER_WAIT)
        before = _in_use(pm)
        async with pm.acquire_master() as conn:
            await adapter.begin(conn)
            assert await adapter.fetchval(conn, "SELECT 1") == 1
            await asyncio.to_thread(cluster.freeze, cluster.primary)
            started = loop.time()
        took = loop.time() - started
        bound = AT_ONCE if background else pm.refresh_timeout + SLACK
        assert took < bound, f"leaving async with took {took:.2f}s"
        if background:  # its rollback waits on the server until the release bound passes
            await _until_release_cut_off(pm, pm.refresh_timeout + SLACK)
        assert _in_use(pm) == before
    finally:
        await _close_after_thaw(pm, cluster, suite_app_name)


@_scenario()
@_one_node
async def test_cancelling_the_caller_of_a_release_on_frozen_primary_leaves_nothing_checked_out(
    hasql_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter, suite_app_name: str
) -> None:
    """A caller cancelled while its release waits on a frozen primary ends at once with
    ``CancelledError``, and ``in_use`` is back to its value before the acquire: the core discards
    the connection, nothing stays checked out. (A driver whose release finishes in the
    background has no such caller: its release returns at once, and a graceful close then
    waits for the release, or terminates the pool when the close bound passes first.)"""
    adapter = driver_suite_adapter
    cluster = hasql_cluster
    loop = asyncio.get_running_loop()
    pm = _frozen_primary_manager(cluster, adapter, suite_app_name, release_timeout=30.0)
    try:
        await pm.ready(masters_count=1, replicas_count=0, timeout=SERVER_WAIT)
        before = _in_use(pm)
        conn = await pm.acquire_master()
        await adapter.begin(conn)
        assert await adapter.fetchval(conn, "SELECT 1") == 1
        assert _in_use(pm) == before + 1
        await asyncio.to_thread(cluster.freeze, cluster.primary)
        releasing = asyncio.ensure_future(pm.release(conn))
        done, _ = await asyncio.wait({releasing}, timeout=0.3)
        if pm.driver.release_in_background:
            assert done, "a release that finishes in the background made its caller wait"
            started = loop.time()
            await asyncio.wait_for(pm.close(timeout=0.5), AT_ONCE + SLACK)
            assert loop.time() - started < AT_ONCE + SLACK
            assert _in_use(pm) == before
            return
        assert not done, "the release of an open transaction returned while the host was frozen"
        started = loop.time()
        releasing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(releasing, AT_ONCE + SLACK)
        assert loop.time() - started < AT_ONCE
        assert _in_use(pm) == before
    finally:
        await _close_after_thaw(pm, cluster, suite_app_name)


# == error facts ====================================================================================


@_scenario()
async def test_write_on_standby_is_sqlstate_25006_read_only(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """A write on a standby: ``ErrorFacts(sqlstate="25006")``, READ_ONLY; the connection is fine."""
    driver, adapter = suite_driver, driver_suite_adapter
    async with _opened_pool(
        driver, _dsn(suite_cluster.replicas[0]), adapter.pool_options(1, 1)
    ) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            error = await _error_of(adapter.execute(conn, "CREATE TABLE hasql_never (id int)"))
            assert driver.error_facts(error) == ErrorFacts(sqlstate="25006"), repr(error)
            assert driver.classify_error(error) is ErrorKind.READ_ONLY
            assert not driver.is_connection_closed(conn)
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_write_in_read_only_transaction_is_sqlstate_25006_read_only(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """A write in a read-only transaction on the primary: the same facts as on a standby."""
    driver, adapter = suite_driver, driver_suite_adapter
    async with _opened_pool(
        driver, _dsn(suite_cluster.primary), adapter.pool_options(1, 1)
    ) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            await adapter.begin(conn, read_only=True)
            error = await _error_of(adapter.execute(conn, "CREATE TEMP TABLE hasql_ro (id int)"))
            assert driver.error_facts(error) == ErrorFacts(sqlstate="25006"), repr(error)
            assert driver.classify_error(error) is ErrorKind.READ_ONLY
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_terminated_backend_is_connection_lost(
    suite_driver: Drv,
    suite_cluster: LocalCluster,
    driver_suite_adapter: DriverSuiteAdapter,
    suite_app_name: str,
) -> None:
    """``pg_terminate_backend()`` of a handed-out connection's session, while it runs a statement:
    the statement fails as CONNECTION_LOST (57P01 or a lost connection), the connection reads as
    closed, and once discarded the pool hands out a working one."""
    driver, adapter, node = suite_driver, driver_suite_adapter, suite_cluster.primary
    dsn = _dsn(node, application_name=suite_app_name)
    async with _opened_pool(driver, dsn, adapter.pool_options(1, 1)) as pool:
        conn = await driver.acquire(pool, 5.0)
        pid = await _pid(adapter, conn)
        running = asyncio.ensure_future(adapter.fetchval(conn, "SELECT pg_sleep(30)"))
        try:
            await _until_active(suite_cluster, node, pid)
            await _sql(suite_cluster, node, f"SELECT pg_terminate_backend({pid})")
            error = await _error_of(asyncio.wait_for(running, SERVER_WAIT))
        finally:
            running.cancel()
        facts = driver.error_facts(error)  # asyncpg: 08003 "closed in the middle of operation"
        assert facts.sqlstate == "57P01" or facts.connection_lost, repr(error)
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST
        assert driver.is_connection_closed(conn)
        driver.discard(pool, conn)
        conn = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
        try:
            assert await adapter.fetchval(conn, "SELECT 1") == 1
        finally:
            await driver.release(pool, conn)


@_scenario()
@_one_node
async def test_server_shutdown_ends_handed_out_connection_as_connection_lost(
    suite_driver: Drv, hasql_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """A fast shutdown ends every session (57P01): the next statement on a handed-out connection
    fails as CONNECTION_LOST; an acquire while the server is down fails within the core's deadline,
    as CONNECTION_LOST when the driver raises an error of its own."""
    driver, adapter, node = suite_driver, driver_suite_adapter, hasql_cluster.primary
    pool = driver.create_pool(_dsn(node), adapter.pool_options(1, 1))
    await asyncio.wait_for(driver.open_pool(pool), SERVER_WAIT)
    try:
        conn = await driver.acquire(pool, 5.0)
        await asyncio.to_thread(hasql_cluster.stop, node, "fast")
        error = await _error_of(asyncio.wait_for(adapter.fetchval(conn, "SELECT 1"), SERVER_WAIT))
        facts = driver.error_facts(error)
        assert facts.sqlstate == "57P01" or facts.connection_lost, repr(error)
        assert driver.classify_error(error) is ErrorKind.CONNECTION_LOST
        driver.discard(pool, conn)
        refused = await _error_of(asyncio.wait_for(driver.acquire(pool, 2.0), 2.0 + SLACK))
        if not isinstance(refused, asyncio.TimeoutError):
            assert driver.classify_error(refused) is ErrorKind.CONNECTION_LOST, repr(refused)
        assert driver.pool_stats(pool).in_use == 0
    finally:
        await asyncio.wait_for(driver.terminate_pool(pool), 5.0)


@_scenario()
async def test_server_errors_of_a_statement_carry_their_sqlstate_and_are_other(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """SQL errors are the user's, not the host's: a syntax error (42601), a division by zero
    (22012), a unique violation (23505) and the server's ``statement_timeout`` (57014) carry their
    SQLSTATE, no lost connection, classify as OTHER, and leave the connection open."""
    driver, adapter = suite_driver, driver_suite_adapter
    cases = [
        ("SELEC 1", "42601"),
        ("SELECT 1 / 0", "22012"),
        (
            "CREATE TEMP TABLE hasql_u (id int PRIMARY KEY); "
            "INSERT INTO hasql_u VALUES (1); INSERT INTO hasql_u VALUES (1)",
            "23505",
        ),
        ("SET statement_timeout = 50; SELECT pg_sleep(5)", "57014"),
    ]
    async with _opened_pool(
        driver, _dsn(suite_cluster.primary), adapter.pool_options(1, 1)
    ) as pool:
        for sql, sqlstate in cases:
            conn = await driver.acquire(pool, 5.0)
            try:
                error = await _error_of(adapter.execute(conn, sql))
                assert driver.error_facts(error) == ErrorFacts(sqlstate=sqlstate), (sql, error)
                assert driver.classify_error(error) is ErrorKind.OTHER
                assert not driver.is_connection_closed(conn)
            finally:
                await driver.release(pool, conn)


@_scenario()
async def test_client_side_statement_timeout_is_not_a_lost_connection(
    suite_driver: Drv, suite_cluster: LocalCluster, driver_suite_adapter: DriverSuiteAdapter
) -> None:
    """A statement abandoned at the application's own deadline (``asyncio.wait_for``) raises a
    timeout whose facts are not a lost connection (OTHER): the host is not to blame. The
    connection is then discarded, as the core does after an interrupted statement."""
    driver, adapter = suite_driver, driver_suite_adapter
    async with _opened_pool(
        driver, _dsn(suite_cluster.primary), adapter.pool_options(1, 1)
    ) as pool:
        conn = await driver.acquire(pool, 5.0)
        try:
            error = await _error_of(
                asyncio.wait_for(adapter.fetchval(conn, "SELECT pg_sleep(10)"), 0.2)
            )
            assert isinstance(error, asyncio.TimeoutError)
            assert driver.error_facts(error) == ErrorFacts()
            assert driver.classify_error(error) is ErrorKind.OTHER
        finally:
            driver.discard(pool, conn)
        conn = await asyncio.wait_for(driver.acquire(pool, 5.0), SERVER_WAIT)
        try:
            assert await adapter.fetchval(conn, "SELECT 1") == 1
        finally:
            await driver.release(pool, conn)


@_scenario()
async def test_refused_connection_is_connection_lost(suite_driver: Drv) -> None:
    """Connecting to a port nothing listens on: ``ErrorFacts(connection_lost=True)``, no SQLSTATE."""
    error = await _error_of(suite_driver.connect_monitor(_closed_port_dsn(), 5.0))
    assert suite_driver.error_facts(error) == ErrorFacts(connection_lost=True), repr(error)
    assert suite_driver.classify_error(error) is ErrorKind.CONNECTION_LOST


@_scenario()
async def test_error_facts_of_plain_python_exceptions(suite_driver: Drv) -> None:
    """Exceptions that are not the library's: no facts for a timeout, a cancellation or a bug;
    a network ``OSError`` is a lost connection; ``error_facts`` never raises."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text")

    nothing = [
        asyncio.TimeoutError(),
        TimeoutError(),
        asyncio.CancelledError(),
        ValueError("x"),
        KeyError("x"),
        Unprintable(),
    ]
    for error in nothing:
        assert suite_driver.error_facts(error) == ErrorFacts(), repr(error)
        assert suite_driver.classify_error(error) is ErrorKind.OTHER
    for lost in (ConnectionResetError(104, "reset"), ConnectionRefusedError(111, "refused")):
        assert suite_driver.error_facts(lost) == ErrorFacts(connection_lost=True), repr(lost)
