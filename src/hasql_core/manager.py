"""``PoolManager``: one pool per host, a monitor that knows each host's role, and acquires that hand
out a connection to the right one.

This module is the wiring and the acquire loop; the manager's other faces are mixins of their own
modules: waiting for hosts (``_readiness``), hasql's pool-level API (``_compat``), causal sessions
(``_causal_api``) and what it shows of itself (``_introspection``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Callable, Mapping, Sequence
from time import monotonic
from types import TracebackType
from typing import Any

from . import _plugins as plugins
from ._acquire import AcquireContext, AcquireRequest
from ._acquire_stats import AcquireRecorder
from ._arguments import (
    DEFAULT_ACQUIRE_TIMEOUT,
    DEFAULT_CLOSE_TIMEOUT,
    DEFAULT_FAST_REFRESH_DELAY,
    DEFAULT_MASTER_AS_REPLICA_WEIGHT,
    DEFAULT_REFRESH_DELAY,
    DEFAULT_REFRESH_TIMEOUT,
    DEFAULT_STOPWATCH_WINDOW_SIZE,
    AcquireRequests,
    manager_options,
    positive,
)
from ._causal_api import CausalApi
from ._compat import HasqlPoolApi, resolve_balancer
from ._deadline import finish_by
from ._events import Events
from ._fast_probing import FastProbing
from ._handout import Handout
from ._introspection import Introspection
from ._lifecycle import close_pools, log_crash, stop_monitors, wait_for_returns
from ._monitor import HostMonitor
from ._readiness import Readiness
from ._routing import choose_host
from ._topology import HostEntry, Topology
from .balancer import BalancerPolicy
from .causal import current_session
from .driver import Driver
from .dsn import Dsn, for_one_host, split_dsn
from .error_kinds import HOST_FAILURES
from .errors import AcquireTimeoutError, PoolManagerClosedError, PoolSetupError
from .staleness import StalenessPolicy

log = logging.getLogger("hasql_core")

#: An empty set of hosts, shared by every acquire that has excluded none.
_NOBODY: frozenset[HostEntry] = frozenset()


class PoolManager(Readiness, HasqlPoolApi, CausalApi, Introspection):
    """Connections to the right host of a PostgreSQL cluster given by one multi-host DSN.

    One pool per host is created through the driver with ``pool_factory_kwargs`` unchanged (no hidden
    extra connection: the monitor uses a dedicated connection of its own per host). A monitor task per
    host keeps each host's role and lag current; ``acquire()`` picks the primary for writes and a
    replica within the lag limit for reads, using the balancer policy among suitable hosts.

    Arguments keep the meaning they have in hasql's ``BasePoolManager``:

    - ``acquire_timeout``: default deadline (seconds) of one acquire, covering both the wait for a
      suitable host and the driver's own acquire.
    - ``refresh_delay``: seconds between two probes of a host.
    - ``refresh_timeout``: bound of each connect, probe and pool opening of the monitor (default 2 s).
    - ``fallback_master``: let reads use the primary when no replica is suitable.
    - ``master_as_replica_weight``: the probability (0 to 1) that the primary joins the candidates of
      a read next to the replicas: 0 never, 1 always.
    - ``balancer_policy``: a policy name (``"greedy"``, ``"round_robin"``, ``"random_weighted"`` or one
      a plugin provides), a :class:`~hasql_core.balancer.BalancerPolicy` subclass, or an instance.
    - ``stopwatch_window_size``: probes over which each host's median response time is taken.
    - ``pool_factory_kwargs``: passed to the driver's pool factory for every host; never modified.

    New: ``driver`` (a name, a :class:`~hasql_core.driver.Driver` subclass or an instance), ``max_lag``
    (seconds or a timedelta) and ``max_lag_bytes`` (replicas beyond either are not used for reads),
    ``observers`` (objects implementing the event hooks, or entry-point names), ``close_timeout``
    (how long ``close()`` waits for handed-out connections), ``release_timeout`` (how long giving
    a connection back may wait on its server before the connection is discarded instead; default
    ``refresh_timeout``), ``stale_fallback`` (a read uses a replica beyond the lag limit when no
    fresh replica, nor the primary with ``fallback_master``, can serve it, instead of waiting: hasql
    0.10's order), ``staleness`` (hasql 0.10's ``StalenessPolicy``, translated to ``max_lag`` /
    ``max_lag_bytes`` with ``stale_fallback``; see :mod:`hasql_core.staleness`),
    ``balancer_policy_options`` (keyword arguments the policy class is built with). A
    ``balancer_policy`` may also be a policy class written for hasql (a subclass of
    :class:`hasql_core.balancer_policy.AbstractBalancerPolicy`).

    Unlike hasql, ``async with PoolManager(...)`` does not wait for the hosts: call :meth:`ready`
    (hasql waited for every host, and failed after 10 s when one was down).

    The manager starts monitoring when created inside a running event loop, otherwise at its first
    use, and serves that event loop only.
    Use ``async with PoolManager(...) as pm`` or call :meth:`close` when done.
    """

    def __init__(
        self,
        dsn: str | Dsn,
        *,
        driver: str | type[Driver[Any, Any, Any]] | Driver[Any, Any, Any],
        acquire_timeout: float = DEFAULT_ACQUIRE_TIMEOUT,
        refresh_delay: float = DEFAULT_REFRESH_DELAY,
        refresh_timeout: float = DEFAULT_REFRESH_TIMEOUT,
        fallback_master: bool = False,
        master_as_replica_weight: float = DEFAULT_MASTER_AS_REPLICA_WEIGHT,
        balancer_policy: str | type[BalancerPolicy] | BalancerPolicy | type[Any] = "greedy",
        stopwatch_window_size: int = DEFAULT_STOPWATCH_WINDOW_SIZE,
        pool_factory_kwargs: Mapping[str, Any] | None = None,
        max_lag: float | datetime.timedelta | None = None,
        max_lag_bytes: int | None = None,
        observers: Sequence[object | str] = (),
        close_timeout: float = DEFAULT_CLOSE_TIMEOUT,
        fast_refresh_delay: float = DEFAULT_FAST_REFRESH_DELAY,
        release_timeout: float | None = None,
        stale_fallback: bool = False,
        staleness: StalenessPolicy | None = None,
        balancer_policy_options: Mapping[str, Any] | None = None,
    ) -> None:
        options = manager_options(
            acquire_timeout=acquire_timeout,
            refresh_delay=refresh_delay,
            refresh_timeout=refresh_timeout,
            close_timeout=close_timeout,
            release_timeout=release_timeout,
            fast_refresh_delay=fast_refresh_delay,
            fallback_master=fallback_master,
            master_as_replica_weight=master_as_replica_weight,
            stopwatch_window_size=stopwatch_window_size,
            pool_factory_kwargs=pool_factory_kwargs,
            max_lag=max_lag,
            max_lag_bytes=max_lag_bytes,
            stale_fallback=stale_fallback,
            staleness=staleness,
        )
        self._options = options
        self._dsn = [for_one_host(host_dsn) for host_dsn in split_dsn(dsn)]
        self._driver = plugins.make_driver(driver)
        self._balancer, self._hasql_policy = resolve_balancer(
            self, balancer_policy, balancer_policy_options
        )
        self._events = Events(plugins.make_observer_manager(observers))
        self._entries = tuple(
            HostEntry(host_dsn, self._driver, options.stopwatch_window_size)
            for host_dsn in self._dsn
        )
        self._entry_by_pool: dict[int, HostEntry] = {}
        self._topology = Topology(self._entries, options.lag_limit, self._events)
        self._fast_probing = FastProbing()
        self._monitors = tuple(
            HostMonitor(
                entry,
                self._driver,
                self._topology,
                options.monitor,
                options.pool_factory_kwargs,
                self._fast_probing.wanted,
                self._events,
            )
            for entry in self._entries
        )
        self._fast_probing.monitors = self._monitors
        self._monitor_of = dict(zip(self._entries, self._monitors, strict=True))
        self._requests = AcquireRequests(options)
        self._default_requests = self._requests.plain
        self._tasks: list[asyncio.Task[None]] = []
        self._clock: Callable[[], float] = monotonic  # the loop's clock, set by _start()
        self._handout = Handout(
            self._driver, options.release_timeout, self._suspect, self._topology.wheel
        )
        self._handed_out = self._handout.out  # the acquire path records connections here
        #: What an ``async with`` block's exit calls: the handout's coroutine, no wrapper around it.
        self._give_back = self._handout.give_back
        self._wheel = self._topology.wheel
        self._closing = False
        self._closed = False
        #: Indexed by ``AcquireRequest.route``: whether ``_acquire`` may choose the host itself
        #: (see ``_update_fast_routes``).
        self._fast_routes = (False, False, False)
        self._pool_waits = 0
        self._pool_wait_time = 0.0
        #: Acquire-path figures, counted only once enable_acquire_stats() was called.
        self._acquire_stats: AcquireRecorder | None = None
        #: Causal scopes open now (a plain acquire checks the contextvar only when there are any),
        #: reads of causal sessions served by the primary, tokens found lost after a failover.
        self._causal_scopes = 0
        self._causal_primary_reads = 0
        self._causal_tokens_lost = 0
        self._events.bind(self)
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop()
            self._start()

    # -- lifecycle -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._topology.wheel.bind(loop)
        # The loop's clock, as a C function when it is the standard one (loop.time() is a Python
        # method around time.monotonic()).
        self._clock = monotonic if type(loop).time is asyncio.BaseEventLoop.time else loop.time
        self._handout.clock = self._clock
        for monitor in self._monitors:
            task = loop.create_task(monitor.run())
            task.add_done_callback(log_crash)
            self._tasks.append(task)
        self._update_fast_routes()
        self._events.manager_started()

    def _check_open(self) -> None:
        if self._closing or self._closed:
            raise PoolManagerClosedError(
                "this PoolManager is closed (or closing); create a new one to connect again"
            )

    def _ensure_running(self) -> None:
        self._check_open()
        if not self._tasks:
            self._start()

    async def __aenter__(self) -> PoolManager:
        self._ensure_running()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop the monitor, wait up to ``timeout`` (default ``close_timeout``) for handed-out
        connections to come back, then close every pool. Pools that do not close in time, or whose
        connections are still out, are terminated. Further use raises ``PoolManagerClosedError``.
        Calling it again does nothing.
        """
        if self._closing or self._closed:
            return
        await self._shut_down(graceful=True, timeout=timeout)

    async def terminate(self) -> None:
        """Close every pool and every connection at once, handed out or not."""
        if self._closed:
            return
        await self._shut_down(graceful=False, timeout=None)

    async def _shut_down(self, graceful: bool, timeout: float | None) -> None:
        self._closing = True
        self._update_fast_routes()
        await stop_monitors(self._tasks, self._topology)
        limit = 0.0
        if graceful:
            limit = self._options.close_timeout if timeout is None else positive(timeout, "timeout")
            await wait_for_returns(self._handout, limit)
        graceful = graceful and not self._handout
        await close_pools(self._entries, self._driver, self._events, graceful, limit)
        self._closed = True
        self._events.manager_closed()

    # -- acquire -------------------------------------------------------------------------------------

    def acquire(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag: float | datetime.timedelta | None = None,
        max_lag_bytes: int | None = None,
        **kwargs: Any,
    ) -> AcquireContext:
        """Acquire a connection: to the primary, or with ``read_only`` to a replica.

        Use ``async with pm.acquire() as conn`` or ``conn = await pm.acquire()`` then
        ``await pm.release(conn)``. ``fallback_master`` and ``master_as_replica_weight`` default to the
        manager's and apply to reads only. ``max_lag`` / ``max_lag_bytes`` override the manager's lag
        limit for this read. ``timeout`` (default ``acquire_timeout``) bounds the whole acquire; when it
        passes, :class:`AcquireTimeoutError` says what was missing and how every host looked.
        ``kwargs`` go to the driver's acquire. Inside :meth:`causal_scope`, the scope's causal
        session serves the acquire (reads then see the session's writes).
        """
        if self._causal_scopes:
            session = current_session()
            if session is not None and session._manager is self:
                return session.acquire(
                    read_only,
                    fallback_master,
                    master_as_replica_weight,
                    timeout,
                    max_lag=max_lag,
                    max_lag_bytes=max_lag_bytes,
                    **kwargs,
                )
        if (
            fallback_master is None
            and master_as_replica_weight is None
            and timeout is None
            and max_lag is None
            and max_lag_bytes is None
            and not kwargs
        ):  # the common call, kept to the cost it had before causal sessions existed
            return AcquireContext(self, self._default_requests[bool(read_only)])
        return AcquireContext(
            self,
            self._requests.build(
                read_only,
                fallback_master,
                master_as_replica_weight,
                timeout,
                max_lag=max_lag,
                max_lag_bytes=max_lag_bytes,
                **kwargs,
            ),
        )

    def acquire_master(self, timeout: float | None = None, **kwargs: Any) -> AcquireContext:
        """``acquire(read_only=False, ...)``: a connection to the primary."""
        if timeout is None and not kwargs and not self._causal_scopes:
            return AcquireContext(self, self._default_requests[False])
        return self.acquire(read_only=False, timeout=timeout, **kwargs)

    def acquire_replica(
        self,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AcquireContext:
        """``acquire(read_only=True, ...)``: a connection to a replica within the lag limit."""
        if (
            fallback_master is None
            and master_as_replica_weight is None
            and timeout is None
            and not kwargs
            and not self._causal_scopes
        ):
            return AcquireContext(self, self._default_requests[True])
        return self.acquire(
            read_only=True,
            fallback_master=fallback_master,
            master_as_replica_weight=master_as_replica_weight,
            timeout=timeout,
            **kwargs,
        )

    async def _acquire(self, request: AcquireRequest, context: AcquireContext | None = None) -> Any:
        """Carry out ``request`` (see :meth:`acquire`) and return the driver's connection (also
        recorded in ``context``, the ``async with`` block it is for, if any).

        The common acquire (a running manager, a write or a plain read, a host ready) picks its
        host here and takes a connection from its pool with the driver's coroutine stepped by
        hand: an idle connection is handed out without a deadline being armed. Everything else
        (starting, closing, policies written for hasql, no host yet, a host that failed under
        this acquire) goes through :meth:`_find_host`. Every Python step here is paid on each
        operation, several times over on a real driver: keep it short.
        """
        clock = self._clock
        started = clock()
        entry: HostEntry | None = None
        if self._fast_routes[request.route]:
            if request.read_only:
                fresh = self._topology.fresh_standbys
                if len(fresh) > 1:
                    entry = self._balancer.choose(fresh, True)  # type: ignore[assignment]
                elif fresh:
                    entry = fresh[0]
            else:
                entry = self._topology.writable
        excluded = _NOBODY
        try:
            while True:
                if entry is None:
                    entry, request, excluded = await self._find_host(
                        request, started, started + request.timeout, excluded
                    )
                pool = entry.pool
                # Counted from now, waiting or not: the greedy policy sends the next acquire to
                # the host with the most capacity left, the shortest queue when all pools are busy.
                entry.in_use += 1
                try:
                    # The driver's own timeout is a fallback: the deadline below is what counts.
                    acquiring = (
                        self._driver.acquire(pool, request.timeout, **request.kwargs)
                        if request.kwargs
                        else self._driver.acquire(pool, request.timeout)
                    )
                    try:
                        pending = acquiring.send(None)
                    except StopIteration as done:
                        connection = done.value
                    else:
                        connection = await finish_by(
                            acquiring, pending, started + request.timeout, self._wheel
                        )
                except BaseException as error:
                    entry.in_use -= 1
                    if not self._host_failed(entry, request, error):
                        raise
                    # The host failed under us: it is re-probed; try another within the deadline.
                    excluded = excluded | {entry}
                    entry = None
                    continue
                self._handed_out[id(connection)] = (connection, entry, pool)
                entry.acquire_count += 1
                entry.acquire_time += clock() - started
                if context is not None:
                    context._connection = connection
                return connection
        except BaseException:
            self._pool_waits += 1  # acquires that ended without a connection (see metrics())
            raise

    def _host_failed(self, entry: HostEntry, request: AcquireRequest, error: BaseException) -> bool:
        """Whether ``error``, raised by the driver's acquire from ``entry``'s pool, is a host
        failure (the host is then re-probed and another one may serve the request). A timeout
        becomes :class:`AcquireTimeoutError`; anything else is the caller's to see."""
        if isinstance(error, asyncio.TimeoutError):
            raise AcquireTimeoutError(
                f"timed out after {request.timeout:g}s waiting for a free connection in the pool "
                f"of {entry.state.name} ({request.describe()}); pool: {entry.pool_stats()}. Raise "
                "the pool's size or the timeout. Hosts: " + self._topology.describe(),
                host=entry.state.name,
            ) from error
        if not isinstance(error, Exception):
            return False
        kind = self._driver.classify_error(error)
        if kind not in HOST_FAILURES:
            return False
        entry.count_error(kind.value)
        self._suspect(entry)
        return True

    async def _find_host(
        self,
        request: AcquireRequest,
        started: float,
        deadline: float,
        excluded: frozenset[HostEntry],
    ) -> tuple[HostEntry, AcquireRequest, frozenset[HostEntry]]:
        """The host to serve ``request`` (minus the ``excluded`` ones, which failed under it), the
        request to serve (pinned to a host by a policy written for hasql) and the hosts still
        excluded. Starts the manager on first use, raises once it is closed, and waits for a host
        until ``deadline``, probing every host fast meanwhile."""
        if self._closing:  # set for good once close() or terminate() begins
            self._check_open()
        if not self._tasks:
            self._start()
        retried = bool(excluded)
        if self._hasql_policy is not None and request.entry is None:
            request = await self._hasql_policy.route(request, deadline)
            retried = True
        fast_mode = False
        try:
            while True:
                entry = choose_host(self._topology, request, self._balancer, excluded)
                if entry is not None:
                    if retried:
                        self._pool_wait_time += self._clock() - started
                    return entry, request, excluded
                if not fast_mode:  # probe every host fast until this acquire is served
                    fast_mode = True
                    self._fast_probing.enter()
                    if self._acquire_stats is not None:
                        self._acquire_stats.no_host(self._topology, request)
                await self._wait_for_change(request, deadline)
                excluded = _NOBODY  # hosts that failed under us have been re-probed meanwhile
                retried = True
        finally:
            if fast_mode:
                self._fast_probing.leave()

    async def _acquire_counted(
        self, request: AcquireRequest, context: AcquireContext | None = None
    ) -> Any:
        """:meth:`_acquire`, counting acquire stats (what :meth:`enable_acquire_stats` swaps in,
        so that with stats off the acquire path does not even check for them)."""
        stats = self._acquire_stats
        assert stats is not None
        started = self._clock()
        try:
            connection = await PoolManager._acquire(self, request, context)
        except AcquireTimeoutError as error:
            if error.host is not None:
                stats.pool_timed_out(error.host)
            raise
        entry = self._handed_out[id(connection)][1]
        stats.served(entry, connection, self._clock() - started)
        if request.read_only and entry is self._topology.writable:
            stats.read_on_primary(self._topology, request)
        return connection

    async def _give_back_counted(self, connection: Any, *rest: Any) -> None:
        """``Handout.give_back`` (same arguments), counting the connection's use time (swapped
        in by :meth:`enable_acquire_stats`, like :meth:`_acquire_counted`)."""
        stats = self._acquire_stats
        entry = self._handout.host_of(connection)
        if stats is not None and entry is not None:
            stats.given_back(entry, connection)
        await self._handout.give_back(connection, *rest)

    def _update_fast_routes(self) -> None:
        """Which requests :meth:`_acquire` may route by itself: none until the manager runs,
        once it closes, or with a policy written for hasql; writes only when the policy does not
        see them."""
        plain = bool(self._tasks) and not self._closing and self._hasql_policy is None
        self._fast_routes = (False, plain and not self._balancer.sees_writes, plain)

    def _check_setup(self) -> None:
        """Raise at once when a pool can never be made, instead of waiting for a timeout."""
        error = self._topology.setup_error
        if error is not None:
            raise PoolSetupError(str(error)) from error.__cause__

    async def _wait_for_change(self, request: AcquireRequest, deadline: float) -> None:
        """Wait for the next topology update; raise at the deadline, when the manager closes, or
        when a pool can never be made."""
        self._check_open()
        self._check_setup()
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            if self._acquire_stats is not None:
                self._acquire_stats.timed_out(request)
            raise AcquireTimeoutError(
                f"no host could serve {request.describe()} within {request.timeout:g}s. "
                "Hosts: " + self._topology.describe()
            )
        await self._topology.wait_for_update(deadline)
        self._check_open()
        self._check_setup()

    async def release(self, connection: Any, **kwargs: Any) -> None:
        """Give back a connection handed out by this manager. ``kwargs`` go to the driver's release.

        Bounded: the driver's release (which may roll back or reset over the network) gets at most
        ``release_timeout`` seconds; after that, or when the caller is cancelled meanwhile, the
        connection is discarded (closed without a round trip; the pool replaces it) and its host
        re-probed. A connection that failed with a host failure (see :meth:`report_error`), came
        back closed, or whose host is not usable now is discarded at once. Raises ``ValueError``
        for a connection this manager did not hand out (or that was already released).

        With a driver whose release may finish in the background (asyncpg's reset query,
        psycopg_pool's putconn; see ``Driver.release_in_background``) this returns once the
        release is under way, unless acquires are queued for that host's pool; the connection
        counts as in use until it is back, ``close()`` waits for it, and an error after that
        point is logged, not raised.
        """
        if self._causal_scopes:
            session = current_session()
            if session is not None and session._manager is self and session.owns(connection):
                await session.release(connection, **kwargs)
                return
        await self._give_back(connection, None, kwargs, True)

    def report_error(self, connection: Any, error: BaseException) -> None:
        """Tell the manager that ``error`` was raised while ``connection`` was in use.

        Host failures (connection lost, read-only violation, server refusing sessions) make the
        manager re-probe the host at once (a demoted primary then stops getting writes within one
        probe), and the connection is discarded, not reset, when it is given back.
        """
        self._handout.report_error(connection, error)

    def _suspect(self, entry: HostEntry) -> None:
        """A host failed under a connection: route nothing new to it until it has been re-probed."""
        self._topology.suspect(entry)
        self._monitor_of[entry].wake()

    def refresh(self, host: str | None = None) -> None:
        """Probe ``host`` (``"host:port"`` as in :meth:`host_states`), or every host, now instead
        of at its next ``refresh_delay``. Returns at once; see :meth:`wait_next_pool_check`."""
        self._check_open()
        monitors = [m for m in self._monitors if host is None or m.entry.state.name == host]
        if not monitors:
            names = ", ".join(e.state.name for e in self._entries)
            raise ValueError(f"no host {host!r} in this PoolManager; its hosts are {names}")
        for monitor in monitors:
            monitor.wake()
