"""An in-process driver over simulated hosts, for unit tests of the core (no network, no server).

A test builds a :class:`FakeCluster`, sets each :class:`FakeHost`'s role, lag, latency and failures,
and passes ``FakeDriver(cluster)`` to ``PoolManager(cluster.dsn, driver=...)``. Every simulated host
counts its open connections and its probes, so tests can check for leaks and for monitor behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from ..driver import Driver, ErrorFacts, PoolStats
from ..dsn import Dsn


class FakeConnectionLost(ConnectionError):
    """The simulated server went away (refused, killed) while a connection was in use."""


class FakeReadOnlyError(Exception):
    """A write reached a simulated standby or read-only primary (SQLSTATE 25006)."""

    sqlstate = "25006"


class FakeHost:
    """One simulated PostgreSQL server. Tests change its attributes at any time.

    - ``role``: ``"primary"`` or ``"standby"``; ``read_only``: ``default_transaction_read_only``.
    - ``wal_lsn``: the primary's write position, or the standby's replay position;
      ``receive_lsn`` and ``replay_age`` (seconds) as a standby reports them; ``timeline``.
    - ``latency``: seconds every connect and query takes.
    - ``reply_delay``: seconds a probe's answer takes to come back after the host measured its
      state (the reply's trip back): its replay age is that much older once the monitor reads it.
    - ``down``: connects are refused and open connections fail (a killed server).
    - ``frozen``: connects and queries never answer until :meth:`thaw` (a stopped server).
    - :meth:`fail_next`: the next ``n`` connects or queries raise the given error.
    - :meth:`stall_replay`: a standby stops replaying; its replay age then grows in real time.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.role = "standby"
        self.read_only = False
        self.wal_lsn = 0
        self.receive_lsn: int | None = None
        self.replay_age: float | None = 0.0
        self.timeline = 1
        self.latency = 0.0
        self.reply_delay = 0.0
        self._stalled_since: float | None = None
        self.down = False
        self.frozen = False
        self._thawed: asyncio.Event | None = None
        self._failures: deque[BaseException] = deque()
        #: Connections currently open to this host (pooled and monitor).
        self.open_connections = 0
        #: Probes answered so far.
        self.probes = 0

    @property
    def name(self) -> str:
        """``host:port``."""
        return f"{self.host}:{self.port}"

    def promote(self) -> None:
        """Become primary on the next timeline."""
        self.role = "primary"
        self.timeline += 1

    def demote(self) -> None:
        """Become a standby."""
        self.role = "standby"

    def stall_replay(self) -> None:
        """Stop replaying (as ``pg_wal_replay_pause()`` would): the replay age grows in real time."""
        self._stalled_since = time.monotonic() - (self.replay_age or 0.0)

    def current_replay_age(self) -> float | None:
        """The replay age a probe reports now."""
        if self._stalled_since is not None:
            return time.monotonic() - self._stalled_since
        return self.replay_age

    def freeze(self) -> None:
        """Stop answering anything until :meth:`thaw`."""
        self.frozen = True

    def thaw(self) -> None:
        """Answer again; requests held while frozen proceed."""
        self.frozen = False
        if self._thawed is not None:
            self._thawed.set()
            self._thawed = None

    def fail_next(self, n: int, error: BaseException | None = None) -> None:
        """Make the next ``n`` connects or queries raise ``error`` (default: connection lost)."""
        for _ in range(n):
            self._failures.append(error or FakeConnectionLost(f"{self.name}: injected failure"))

    async def answer(self) -> None:
        """Behave like the server receiving one request: wait, fail or hang as configured."""
        if self.latency:
            await asyncio.sleep(self.latency)
        while self.frozen:
            if self._thawed is None:
                self._thawed = asyncio.Event()
            await self._thawed.wait()
        if self._failures:
            raise self._failures.popleft()
        if self.down:
            raise FakeConnectionLost(f"{self.name}: connection refused")


class FakeCluster:
    """A set of simulated hosts; the first is primary unless told otherwise."""

    def __init__(
        self,
        hosts: int = 3,
        *,
        primary: int | None = 0,
        password: str = "fake-secret-pw",
        base_port: int = 5432,
    ) -> None:
        self.password = password
        self.hosts = [FakeHost(f"db{i}", base_port) for i in range(hosts)]
        self._by_address: dict[tuple[str, int], FakeHost] = {}
        if primary is not None:
            self.hosts[primary].role = "primary"

    @property
    def dsn(self) -> str:
        """A multi-host DSN naming every simulated host, with the password."""
        hosts = ",".join(h.name for h in self.hosts)
        return f"postgresql://app:{self.password}@{hosts}/app"

    def host(self, host: str, port: int) -> FakeHost:
        """The simulated host at ``host:port``; ``ConnectionRefusedError`` for an unknown one."""
        found = self._by_address.get((host, port))
        if found is None:  # not indexed yet, or added since: re-index
            self._by_address = {(h.host, h.port): h for h in self.hosts}
            found = self._by_address.get((host, port))
        if found is None:
            raise ConnectionRefusedError(f"no simulated host {host}:{port}")
        return found

    def write(self, nbytes: int = 100) -> None:
        """Advance every primary's WAL position, as a write would."""
        for host in self.hosts:
            if host.role == "primary":
                host.wal_lsn += nbytes

    def replicate(self) -> None:
        """Bring every unfrozen, running standby up to the highest primary position."""
        top = max((h.wal_lsn for h in self.hosts if h.role == "primary"), default=0)
        for host in self.hosts:
            if host.role == "standby" and not host.frozen and not host.down:
                host.wal_lsn = host.receive_lsn = top
                host.replay_age = 0.0
                host._stalled_since = None

    @property
    def open_connections(self) -> int:
        """Connections open to all hosts together."""
        return sum(h.open_connections for h in self.hosts)


class FakeConnection:
    """A connection to a :class:`FakeHost`."""

    def __init__(self, host: FakeHost) -> None:
        self.host = host
        self.closed = False
        #: A statement was interrupted before the host answered: like a real library, the
        #: connection must hear back from the host before it can be reused.
        self.busy = False
        host.open_connections += 1

    async def execute(self, sql: str) -> str:
        """Run ``sql``: fails when the host is gone; a statement starting with ``INSERT``,
        ``UPDATE`` or ``DELETE`` fails on a standby or read-only host. Returns the host's name."""
        if self.closed:
            raise FakeConnectionLost("connection is closed")
        self.busy = True
        try:
            await self.host.answer()
        except FakeConnectionLost:
            self.close()
            raise
        self.busy = False
        if sql.split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE") and (
            self.host.role != "primary" or self.host.read_only
        ):
            raise FakeReadOnlyError("cannot execute in a read-only transaction")
        return self.host.name

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self.closed:
            self.closed = True
            self.host.open_connections -= 1


class FakePool:
    """A pool of :class:`FakeConnection` to one host, sized by ``min_size`` and ``max_size``."""

    def __init__(self, host: FakeHost, min_size: int, max_size: int) -> None:
        self.host = host
        self.min_size = min_size
        self.max_size = max_size
        self.idle: list[FakeConnection] = []
        self.in_use: set[FakeConnection] = set()
        self.opening = 0
        self.closed = False
        self._waiters: deque[asyncio.Future[FakeConnection]] = deque()
        self._replacing: set[asyncio.Task[None]] = set()
        self.password: str | None = None

    @property
    def size(self) -> int:
        """Open connections, idle or handed out (including those being opened)."""
        return len(self.idle) + len(self.in_use) + self.opening

    async def connect(self) -> FakeConnection:
        """Open one connection (counted while it opens)."""
        self.opening += 1
        try:
            await self.host.answer()
            return FakeConnection(self.host)
        finally:
            self.opening -= 1

    async def acquire(self) -> FakeConnection:
        """Hand out an idle connection, open a new one, or wait for one to come back."""
        if self.closed:
            raise RuntimeError("pool is closed")
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed:
                self.in_use.add(connection)
                return connection
        if self.size < self.max_size:
            connection = await self.connect()
            self.in_use.add(connection)
            return connection
        waiter: asyncio.Future[FakeConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            connection = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._put_back(waiter.result())
            raise
        self.in_use.add(connection)
        return connection

    def release(self, connection: FakeConnection) -> None:
        """Take a handed-out connection back."""
        self.in_use.discard(connection)
        if connection.closed or self.closed:
            connection.close()
            self.replace_for_waiter()
            return
        self._put_back(connection)

    def replace_for_waiter(self) -> None:
        """A slot was freed by a closed connection: open a new one for the first waiter."""
        if self._waiters and not self.closed and self.size < self.max_size:
            task = asyncio.get_running_loop().create_task(self._open_for_waiter())
            self._replacing.add(task)
            task.add_done_callback(self._replacing.discard)

    async def _open_for_waiter(self) -> None:
        try:
            connection = await self.connect()
        except Exception:
            return
        self._put_back(connection)

    def _put_back(self, connection: FakeConnection) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(connection)
                return
        self.idle.append(connection)

    def close_all(self, include_in_use: bool) -> None:
        """Close idle connections (and handed-out ones when asked) and refuse further acquires."""
        self.closed = True
        for connection in self.idle:
            connection.close()
        self.idle.clear()
        if include_in_use:
            for connection in self.in_use:
                connection.close()
            self.in_use.clear()


class FakeDriver(Driver[FakePool, FakeConnection, FakeConnection]):
    """The driver for :class:`FakeCluster`. Pool options: ``min_size`` (default 1), ``max_size``
    (default 10); anything else is refused, as a real library would."""

    name = "fake"

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster
        #: Every pool this driver created, for tests.
        self.pools: list[FakePool] = []
        #: Calls of :meth:`discard`.
        self.discarded = 0

    def create_pool(self, dsn: Dsn, pool_options: Mapping[str, Any]) -> FakePool:
        """A pool for the simulated host of ``dsn``, not connected yet. Unknown options raise
        ``TypeError`` here, as a real library's pool factory does."""
        unknown = set(pool_options) - {"min_size", "max_size"}
        if unknown:
            raise TypeError(f"unexpected pool options: {sorted(unknown)}")
        pool = FakePool(
            self.cluster.host(dsn.host, dsn.port),
            int(pool_options.get("min_size", 1)),
            int(pool_options.get("max_size", 10)),
        )
        pool.password = dsn.password
        self.pools.append(pool)
        return pool

    async def open_pool(self, pool: FakePool) -> None:
        """Open ``min_size`` connections; a wrong password is refused like a server would."""
        if pool.password != self.cluster.password:
            raise PermissionError("password authentication failed")
        for _ in range(pool.min_size):
            pool.idle.append(await pool.connect())

    async def acquire(self, pool: FakePool, timeout: float | None, **kwargs: Any) -> FakeConnection:
        """Take a connection (the core enforces the timeout by cancellation)."""
        return await pool.acquire()

    async def release(self, pool: FakePool, connection: FakeConnection, **kwargs: Any) -> None:
        """Give a connection back. A connection whose statement was interrupted first waits for
        its host to answer (as a real library waits for a cancellation or a reset): forever while
        the host is frozen, unless it is discarded meanwhile."""
        if connection.busy and not connection.closed:
            try:
                await connection.host.answer()
            except FakeConnectionLost:
                connection.close()
            connection.busy = False
        if connection in pool.in_use:
            pool.release(connection)

    def discard(self, pool: FakePool, connection: FakeConnection) -> None:
        """Close the connection and free its slot; a waiting acquire gets a new connection."""
        self.discarded += 1
        if connection not in pool.in_use:
            return
        connection.close()
        pool.release(connection)
        pool.replace_for_waiter()

    async def close_pool(self, pool: FakePool) -> None:
        """Wait for handed-out connections to come back, then say goodbye to the host (which
        waits while it is frozen, like a graceful close of a real library) and close everything."""
        while pool.in_use:  # noqa: ASYNC110 - simple polling is good enough for a test double
            await asyncio.sleep(0.01)
        if pool.idle:
            with contextlib.suppress(FakeConnectionLost):
                await pool.host.answer()
        pool.close_all(include_in_use=False)

    async def terminate_pool(self, pool: FakePool) -> None:
        """Close everything now."""
        pool.close_all(include_in_use=True)

    async def expire_idle(self, pool: FakePool) -> None:
        """Close idle connections; new ones are opened on demand."""
        for connection in pool.idle:
            connection.close()
        pool.idle.clear()

    def pool_stats(self, pool: FakePool) -> PoolStats:
        """Figures with the contract's meaning."""
        return PoolStats(pool.min_size, pool.max_size, pool.size, len(pool.idle), len(pool.in_use))

    def free_size(self, pool: FakePool) -> int:
        """Idle connections plus unopened capacity."""
        return len(pool.idle) + pool.max_size - pool.size

    def is_connection_closed(self, connection: FakeConnection) -> bool:
        """True once closed."""
        return connection.closed

    def error_facts(self, error: BaseException) -> ErrorFacts:
        """:class:`FakeReadOnlyError` carries SQLSTATE 25006; connection errors are lost
        connections (a timeout is not)."""
        if isinstance(error, FakeReadOnlyError):
            return ErrorFacts(sqlstate=FakeReadOnlyError.sqlstate)
        if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
            return ErrorFacts()
        return ErrorFacts(connection_lost=isinstance(error, (ConnectionError, OSError)))

    async def connect_monitor(self, dsn: Dsn, timeout: float) -> FakeConnection:
        """A connection outside every pool."""
        host = self.cluster.host(dsn.host, dsn.port)
        await host.answer()
        return FakeConnection(host)

    async def probe(self, connection: FakeConnection, query: str) -> Sequence[Any]:
        """The probe row, from the host's simulated state."""
        host = connection.host
        if connection.closed:
            raise FakeConnectionLost("connection is closed")
        try:
            await host.answer()
        except FakeConnectionLost:
            connection.close()
            raise
        host.probes += 1
        standby = host.role != "primary"
        row = (
            standby,
            host.read_only,
            host.wal_lsn,
            host.receive_lsn if standby else None,
            host.current_replay_age() if standby else None,
            host.timeline,
        )
        if host.reply_delay:
            await asyncio.sleep(host.reply_delay)
        return row

    async def query_row(self, connection: FakeConnection, query: str) -> Sequence[Any]:
        """The primary's ``(wal_lsn, timeline)``, as the causal sessions' position query returns
        it; on a standby the query fails as ``pg_current_wal_lsn()`` does during recovery."""
        host = connection.host
        await host.answer()
        if host.role != "primary":
            raise RuntimeError("recovery is in progress")
        return (host.wal_lsn, host.timeline)

    async def close_monitor(self, connection: FakeConnection) -> None:
        """Close without waiting."""
        connection.close()
