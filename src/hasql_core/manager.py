"""``PoolManager``: one pool per host, a monitor that knows each host's role, and acquires that hand
out a connection to the right one."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Awaitable, Mapping, Sequence
from time import monotonic
from types import MappingProxyType, TracebackType
from typing import Any

from . import _plugins as plugins
from ._acquire import AcquireContext, AcquireRequest
from ._acquire_stats import AcquireRecorder, AcquireStats
from ._arguments import check_weight, lag_limit, positive
from ._compat import HasqlPolicyRouter, HasqlPoolApi, hasql_style_policy
from ._deadline import run_until, within
from ._events import Events
from ._handout import Handout
from ._monitor import CLEANUP_TIMEOUT, HostMonitor, MonitorSettings
from ._readiness import Readiness
from ._routing import choose_host
from ._topology import HostEntry, Topology
from .balancer import BalancerPolicy
from .causal import CausalSession, causal_scope, current_session
from .driver import Driver
from .dsn import Dsn, for_one_host, split_dsn
from .error_kinds import HOST_FAILURES
from .errors import (
    AcquireTimeoutError,
    ConfigurationError,
    PoolManagerClosedError,
    PoolSetupError,
)
from .host_state import HostState
from .metrics import ManagerFigures, Metrics, build_metrics
from .staleness import StalenessPolicy, lag_arguments

log = logging.getLogger("hasql_core")

DEFAULT_ACQUIRE_TIMEOUT = 1.0
DEFAULT_REFRESH_DELAY = 1.0
#: A probe is one trivial query: a healthy host answers in well under 100 ms, even busy. Two seconds
#: leaves room for a slow connect (TLS, a loaded server) without flapping, and finds a hung host within
#: ``refresh_delay + refresh_timeout`` = 3 s by default, where hasql needed 30 s.
DEFAULT_REFRESH_TIMEOUT = 2.0
#: Probe interval while an acquire waits for a role no host has (e.g. during a failover).
DEFAULT_FAST_REFRESH_DELAY = 0.05
DEFAULT_CLOSE_TIMEOUT = 10.0
DEFAULT_STOPWATCH_WINDOW_SIZE = 128
DEFAULT_MASTER_AS_REPLICA_WEIGHT = 0.0


#: An empty set of hosts, shared by every acquire that has excluded none.
_NOBODY: frozenset[HostEntry] = frozenset()
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


class PoolManager(Readiness, HasqlPoolApi):
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
    use. Use ``async with PoolManager(...) as pm`` or call :meth:`close` when done.
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
        self._acquire_timeout = positive(acquire_timeout, "acquire_timeout")
        self._refresh_delay = positive(refresh_delay, "refresh_delay")
        self._refresh_timeout = positive(refresh_timeout, "refresh_timeout")
        self._close_timeout = positive(close_timeout, "close_timeout")
        self._release_timeout = (
            self._refresh_timeout
            if release_timeout is None
            else positive(release_timeout, "release_timeout")
        )
        check_weight(master_as_replica_weight)
        if not isinstance(stopwatch_window_size, int) or stopwatch_window_size < 1:
            raise ConfigurationError(
                f"stopwatch_window_size must be a positive integer, got {stopwatch_window_size!r}"
            )
        if pool_factory_kwargs is not None and not isinstance(pool_factory_kwargs, Mapping):
            raise ConfigurationError(
                f"pool_factory_kwargs must be a mapping, got {type(pool_factory_kwargs).__name__}"
            )
        self._fallback_master = bool(fallback_master)
        self._master_as_replica_weight = float(master_as_replica_weight)
        if staleness is not None:
            if max_lag is not None or max_lag_bytes is not None:
                raise ConfigurationError(
                    "staleness= (hasql 0.10) and max_lag/max_lag_bytes say the same thing; pass one"
                )
            max_lag, max_lag_bytes = lag_arguments(staleness)
            stale_fallback = True
        self._stale_fallback = bool(stale_fallback)
        self._lag_limit = lag_limit(max_lag, max_lag_bytes)
        # A private read-only copy: the caller's dict is never modified, by us or by a driver.
        self._pool_factory_kwargs = MappingProxyType(dict(pool_factory_kwargs or {}))
        self._dsn = [for_one_host(host_dsn) for host_dsn in split_dsn(dsn)]
        self._driver = plugins.make_driver(driver)
        hasql_policy = hasql_style_policy(balancer_policy)
        self._balancer = plugins.make_policy(
            "greedy" if hasql_policy is not None else balancer_policy,
            None if hasql_policy is not None else balancer_policy_options,
        )
        self._hasql_policy = (
            None
            if hasql_policy is None
            else HasqlPolicyRouter(hasql_policy(self, **(balancer_policy_options or {})), self)
        )
        self._events = Events(plugins.make_observer_manager(observers))
        self._settings = MonitorSettings(
            refresh_delay=self._refresh_delay,
            refresh_timeout=self._refresh_timeout,
            fast_delay=min(positive(fast_refresh_delay, "fast_refresh_delay"), self._refresh_delay),
        )
        self._entries = tuple(
            HostEntry(host_dsn, self._driver, stopwatch_window_size) for host_dsn in self._dsn
        )
        self._entry_by_pool: dict[int, HostEntry] = {}
        self._topology = Topology(self._entries, self._lag_limit, self._events)
        self._monitors = tuple(
            HostMonitor(
                entry,
                self._driver,
                self._topology,
                self._settings,
                self._pool_factory_kwargs,
                self._fast_wanted,
                self._events,
            )
            for entry in self._entries
        )
        self._default_requests = {
            read_only: AcquireRequest(
                read_only=read_only,
                fallback_master=self._fallback_master,
                weight=self._master_as_replica_weight,
                lag_limit=None,
                timeout=self._acquire_timeout,
                kwargs={},
                stale_fallback=self._stale_fallback and read_only,
            )
            for read_only in (False, True)
        }
        self._monitor_of = dict(zip(self._entries, self._monitors, strict=True))
        self._tasks: list[asyncio.Task[None]] = []
        self._fast_waiters = 0
        self._handout = Handout(self._driver, self._release_timeout, self._suspect)
        self._handed_out = self._handout.out  # the acquire path records connections here
        self._closing = False
        self._closed = False
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
        for monitor in self._monitors:
            task = asyncio.get_running_loop().create_task(monitor.run())
            task.add_done_callback(self._monitor_stopped)
            self._tasks.append(task)
        self._events.manager_started()

    def _monitor_stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("a host monitor stopped unexpectedly", exc_info=task.exception())

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

    async def _stop_monitor(self) -> None:
        pending = [task for task in self._tasks if not task.done()]
        for _ in range(3):  # a task busy in cleanup may need a second nudge; never wait unbounded
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, still = await asyncio.wait(pending, timeout=CLEANUP_TIMEOUT * 2)
            pending = list(still)
        if pending:
            log.warning("%d host monitor task(s) did not stop when cancelled", len(pending))
        self._topology.wake_waiters()

    async def close(self, timeout: float | None = None) -> None:
        """Stop the monitor, wait up to ``timeout`` (default ``close_timeout``) for handed-out
        connections to come back, then close every pool. Pools that do not close in time, or whose
        connections are still out, are terminated. Further use raises ``PoolManagerClosedError``.
        Calling it again does nothing.
        """
        if self._closing or self._closed:
            return
        self._closing = True
        await self._stop_monitor()
        limit = self._close_timeout if timeout is None else positive(timeout, "timeout")
        if self._handout:
            with contextlib.suppress(asyncio.TimeoutError):
                await within(self._handout.watch_returns().wait(), limit)
            if self._handout:
                log.warning(
                    "closing with %d connection(s) still handed out after %gs; terminating them",
                    len(self._handout),
                    limit,
                )
        await asyncio.gather(
            *(self._close_pool(e, graceful=not self._handout, limit=limit) for e in self._entries)
        )
        self._closed = True
        self._events.manager_closed()

    async def terminate(self) -> None:
        """Close every pool and every connection at once, handed out or not."""
        if self._closed:
            return
        self._closing = True
        await self._stop_monitor()
        await asyncio.gather(*(self._close_pool(e, graceful=False, limit=0) for e in self._entries))
        self._closed = True
        self._events.manager_closed()

    async def _close_pool(self, entry: HostEntry, graceful: bool, limit: float) -> None:
        pool, entry.pool = entry.pool, None
        if pool is None:
            return
        # A graceful close talks to the server; one that stopped answering (or is held back) would
        # keep close() waiting for nothing, so its pool is terminated instead.
        graceful = graceful and entry.state.available and entry.suspect is None
        try:
            if graceful:
                await within(self._driver.close_pool(pool), max(limit, CLEANUP_TIMEOUT))
            else:
                await within(self._driver.terminate_pool(pool), CLEANUP_TIMEOUT * 5)
        except Exception as error:
            log.warning(
                "closing the pool of %s failed (%r); terminating it",
                entry.state.name,
                type(error).__name__,
            )
            with contextlib.suppress(Exception):
                await within(self._driver.terminate_pool(pool), CLEANUP_TIMEOUT * 5)
        self._events.pool_closed(entry.state)

    # -- fast probing while acquires wait ------------------------------------------------------------

    def _fast_wanted(self) -> bool:
        return self._fast_waiters > 0

    def _enter_fast_mode(self) -> None:
        self._fast_waiters += 1
        if self._fast_waiters == 1:
            for monitor in self._monitors:
                monitor.wake()

    def _leave_fast_mode(self) -> None:
        self._fast_waiters -= 1

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
            self._request_for(
                read_only,
                fallback_master,
                master_as_replica_weight,
                timeout,
                max_lag=max_lag,
                max_lag_bytes=max_lag_bytes,
                **kwargs,
            ),
        )

    def _request_for(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        *,
        max_lag: float | datetime.timedelta | None = None,
        max_lag_bytes: int | None = None,
        **kwargs: Any,
    ) -> AcquireRequest:
        """The request ``acquire()`` with these arguments makes (checked)."""
        if (
            fallback_master is None
            and master_as_replica_weight is None
            and timeout is None
            and max_lag is None
            and max_lag_bytes is None
            and not kwargs
        ):  # the common call: a request made once, at construction
            return self._default_requests[bool(read_only)]
        if not read_only:
            if master_as_replica_weight is not None:
                raise ConfigurationError(
                    "master_as_replica_weight applies to reads only; pass read_only=True or drop it"
                )
            if max_lag is not None or max_lag_bytes is not None:
                raise ConfigurationError("max_lag and max_lag_bytes apply to reads only")
        check_weight(master_as_replica_weight)
        limit = None
        if max_lag is not None or max_lag_bytes is not None:
            limit = lag_limit(max_lag, max_lag_bytes)
        request = AcquireRequest(
            read_only=read_only,
            fallback_master=self._fallback_master if fallback_master is None else fallback_master,
            weight=(
                self._master_as_replica_weight
                if master_as_replica_weight is None
                else master_as_replica_weight
            ),
            lag_limit=limit,
            timeout=self._acquire_timeout if timeout is None else positive(timeout, "timeout"),
            kwargs=kwargs,
            stale_fallback=self._stale_fallback and bool(read_only),
        )
        return request

    def acquire_master(self, timeout: float | None = None, **kwargs: Any) -> AcquireContext:
        """``acquire(read_only=False, ...)``: a connection to the primary."""
        return self.acquire(read_only=False, timeout=timeout, **kwargs)

    def acquire_replica(
        self,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> AcquireContext:
        """``acquire(read_only=True, ...)``: a connection to a replica within the lag limit."""
        return self.acquire(
            read_only=True,
            fallback_master=fallback_master,
            master_as_replica_weight=master_as_replica_weight,
            timeout=timeout,
            **kwargs,
        )

    async def _acquire(self, request: AcquireRequest) -> Any:
        """Carry out ``request`` (see :meth:`acquire`) and return the driver's connection."""
        if self._closing or self._closed:
            self._check_open()
        if not self._tasks:
            self._start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + request.timeout
        fast_mode = retried = False
        excluded: frozenset[HostEntry] = _NOBODY
        self._pool_waits += 1
        try:
            if self._hasql_policy is not None and request.entry is None:
                request = await self._hasql_policy.route(request, deadline)
                retried = True
            while True:
                entry = choose_host(self._topology, request, self._balancer, excluded)
                if entry is None:
                    if not fast_mode:  # probe every host fast until this acquire is served
                        fast_mode = True
                        self._enter_fast_mode()
                        if self._acquire_stats is not None:
                            self._acquire_stats.no_host(self._topology, request)
                    await self._wait_for_change(request, deadline)
                    excluded = _NOBODY  # hosts that failed under us have been re-probed meanwhile
                    retried = True
                    continue
                if retried:
                    self._pool_wait_time += loop.time() - started
                remaining = deadline - loop.time() if retried else request.timeout
                stats = self._acquire_stats
                counters = None if stats is None else stats.begin(entry)
                try:
                    connection = await run_until(
                        self._driver.acquire(entry.pool, remaining, **request.kwargs), deadline
                    )
                except asyncio.TimeoutError as error:
                    if counters is not None:
                        counters.timeouts += 1
                    raise AcquireTimeoutError(
                        f"timed out after {request.timeout:g}s waiting for a free connection in "
                        f"the pool of {entry.state.name} ({request.describe()}); pool: "
                        f"{entry.pool_stats()}. Raise the pool's size or the timeout. Hosts: "
                        + self._topology.describe()
                    ) from error
                except Exception as error:
                    kind = self._driver.classify_error(error)
                    if kind not in HOST_FAILURES:
                        raise
                    # The host failed under us: re-probe it, try another one within the deadline.
                    entry.count_error(kind.value)
                    self._suspect(entry)
                    excluded = excluded | {entry}
                    retried = True
                    continue
                finally:
                    if counters is not None:
                        counters.pending -= 1
                now = loop.time()
                # Use time is measured on time.monotonic(): cheaper than loop.time() at release.
                self._handed_out[id(connection)] = (
                    connection,
                    entry,
                    None if counters is None else monotonic(),
                    entry.pool,
                )
                entry.acquire_count += 1
                entry.acquire_time += now - started
                if stats is not None and counters is not None:
                    counters.waited(now - started)
                    if request.read_only and entry is self._topology.writable:
                        stats.read_on_primary(self._topology, request)
                return connection
        finally:
            if fast_mode:
                self._leave_fast_mode()

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
        """
        if self._causal_scopes:
            session = current_session()
            if session is not None and session._manager is self and session.owns(connection):
                await session.release(connection, **kwargs)
                return
        await self._handout.give_back(connection, kwargs, None, check_closed=True)

    def causal_session(
        self, token: str | None = None, *, catch_up: float | None = None
    ) -> CausalSession:
        """A :class:`~hasql_core.causal.CausalSession`: acquires whose reads see its own writes.

        ``token`` (a previous session's ``.token``) resumes that session, here or in another
        process. ``catch_up`` bounds how long a read waits for a standby to replay the session's
        writes before the primary serves it (default 0.2 s, always within the acquire's timeout).
        """
        self._check_open()
        if catch_up is None:
            return CausalSession(self, token)
        return CausalSession(self, token, catch_up=positive(catch_up, "catch_up"))

    def causal_scope(
        self, token: str | None = None, *, catch_up: float | None = None
    ) -> contextlib.AbstractContextManager[CausalSession]:
        """``with pm.causal_scope(token) as session:``: inside the block, this task's plain
        ``pm.acquire*()`` and ``pm.release()`` calls go through a causal session (resumed from
        ``token`` when given); read ``session.token`` at the end to hand it to the client."""
        return causal_scope(self.causal_session(token, catch_up=catch_up))

    def _give_back(self, connection: Any, failure: BaseException | None) -> Awaitable[None]:
        """Release or discard a connection whose ``async with`` block just ended (the handout's
        coroutine itself, without a coroutine of the manager's around it)."""
        return self._handout.give_back(connection, _NO_KWARGS, failure, failure is not None)

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

    # -- introspection -------------------------------------------------------------------------------

    def host_states(self) -> tuple[HostState, ...]:
        """Every host's current state, in DSN order."""
        return self._topology.states()

    def enable_acquire_stats(self) -> None:
        """Start counting the figures :meth:`acquire_stats` returns (wait and use times per host
        in fixed buckets, pool timeouts, acquires waiting in each pool, lag refusals). Until this is
        called the acquire path counts none of them; afterwards each acquire and release costs a
        few integer and float operations more. Calling it again does nothing. Observers call it
        from ``hasql_manager_started``.
        """
        if self._acquire_stats is None:
            self._acquire_stats = AcquireRecorder(self._entries)
            self._handout.stats = self._acquire_stats

    def acquire_stats(self) -> AcquireStats | None:
        """A snapshot of the acquire figures counted since :meth:`enable_acquire_stats` (see
        :class:`~hasql_core.metrics.AcquireStats`), or ``None`` when they are not enabled. Read it
        from the manager's event loop thread."""
        if self._acquire_stats is None:
            return None
        return self._acquire_stats.snapshot(self._entries)

    def metrics(self) -> Metrics:
        """A snapshot of every host's state, pool, acquires and errors (see :class:`Metrics`)."""
        topology = self._topology
        return build_metrics(
            self._entries,
            ManagerFigures(
                handed_out_from=self._handout.hosts(),
                pool_waits=self._pool_waits,
                pool_wait_time=self._pool_wait_time,
                waiting_acquires=self._fast_waiters,
                writable=topology.writable,
                fresh_standbys=topology.fresh_standbys,
                standbys=topology.standbys,
                closing=self.closing,
                closed=self._closed,
                causal_primary_reads=self._causal_primary_reads,
                causal_tokens_lost=self._causal_tokens_lost,
            ),
        )

    @property
    def dsn(self) -> list[Dsn]:
        """One single-host DSN per host, in the order given (their ``str`` is redacted)."""
        return list(self._dsn)

    @property
    def driver(self) -> Driver[Any, Any, Any]:
        """The driver instance this manager uses."""
        return self._driver

    @property
    def balancer(self) -> BalancerPolicy:
        """The balancer policy instance this manager uses."""
        return self._balancer

    @property
    def refresh_delay(self) -> float:
        """Seconds between two probes of a host."""
        return self._refresh_delay

    @property
    def refresh_timeout(self) -> float:
        """Bound of each monitor connect, probe and pool opening, in seconds."""
        return self._refresh_timeout

    @property
    def pool_factory_kwargs(self) -> Mapping[str, Any]:
        """A read-only copy of the pool options given."""
        return self._pool_factory_kwargs

    @property
    def closing(self) -> bool:
        """True while ``close()`` or ``terminate()`` runs."""
        return self._closing and not self._closed

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``terminate()`` finished."""
        return self._closed

    def __repr__(self) -> str:
        hosts = ", ".join(e.state.name for e in self._entries)
        state = "closed" if self._closed else "closing" if self._closing else "open"
        return f"<PoolManager driver={self._driver.name!r} hosts=[{hosts}] {state}>"
