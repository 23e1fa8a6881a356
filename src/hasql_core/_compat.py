"""hasql's pool-level API, kept for code written against hasql's ``BasePoolManager``.

These methods work on the pools themselves (one per host) rather than on connections chosen by role:
``get_pool()``, ``acquire_from_pool()``, ``register_connection()``, ... :class:`PoolManager` inherits
them from :class:`HasqlPoolApi`; new code needs none of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import _plugins as plugins
from ._acquire import AcquireContext, AcquireRequest
from ._arguments import ManagerOptions, positive
from ._deadline import await_until
from ._fast_probing import FastProbing
from ._handout import Handout
from ._routing import choose_host
from ._topology import HostEntry, Topology
from .balancer import BalancerPolicy
from .balancer_policy import AbstractBalancerPolicy
from .driver import Driver, PoolStats
from .errors import AcquireTimeoutError, ConfigurationError, NoAvailablePoolError
from .host_state import Role


class HasqlPoolApi:
    """The pool-level methods of hasql's ``BasePoolManager`` (a mixin of ``PoolManager``)."""

    # Provided by PoolManager.
    _balancer: BalancerPolicy
    _driver: Driver[Any, Any, Any]
    _entries: tuple[HostEntry, ...]
    _entry_by_pool: dict[int, HostEntry]
    _fast_probing: FastProbing
    _handout: Handout
    _options: ManagerOptions
    _pool_wait_time: float
    _pool_waits: int
    _topology: Topology
    _give_back: Callable[..., Awaitable[None]]

    if TYPE_CHECKING:

        def acquire(
            self,
            read_only: bool = False,
            fallback_master: bool | None = None,
            master_as_replica_weight: float | None = None,
            timeout: float | None = None,
            **kwargs: Any,
        ) -> AcquireContext: ...

        async def release(self, connection: Any, **kwargs: Any) -> None: ...

        def _ensure_running(self) -> None: ...

        async def _wait_for_change(self, request: AcquireRequest, deadline: float) -> None: ...

        async def _acquire(
            self, request: AcquireRequest, context: AcquireContext | None = None
        ) -> Any: ...

        def report_error(self, connection: Any, error: BaseException) -> None: ...

    def _entry_of(self, pool: Any) -> HostEntry:
        entry = self._entry_by_pool.get(id(pool))
        if entry is None or entry.pool is not pool:
            entry = next((e for e in self._entries if e.pool is pool), None)
            if entry is None:
                raise ValueError(f"{type(pool).__name__} object is not a pool of this PoolManager")
            self._entry_by_pool[id(pool)] = entry
        return entry

    async def get_pool(
        self,
        read_only: bool = False,
        fallback_master: bool | None = None,
        master_as_replica_weight: float | None = None,
    ) -> Any:
        """The pool a matching ``acquire`` would use now, waiting up to ``acquire_timeout``."""
        context = self.acquire(read_only, fallback_master, master_as_replica_weight)
        request = context.request
        self._ensure_running()
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + request.timeout
        self._fast_probing.enter()
        try:
            while (entry := choose_host(self._topology, request, self._balancer)) is None:
                await self._wait_for_change(request, deadline)
        finally:
            self._fast_probing.leave()
            self._pool_waits += 1
            self._pool_wait_time += loop.time() - started
        return entry.pool

    async def get_master_pools(self) -> list[Any]:
        """Pools of the primary that takes writes (waiting up to ``acquire_timeout`` for one)."""
        await self.get_pool(read_only=False)
        return [e.pool for e in (self._topology.writable,) if e is not None]

    async def get_replica_pools(self, fallback_master: bool = False) -> list[Any]:
        """Pools of the usable replicas, or with ``fallback_master`` the primary's when there are none
        (waiting up to ``acquire_timeout`` for one)."""
        await self.get_pool(read_only=True, fallback_master=fallback_master)
        pools = [e.pool for e in self._topology.fresh_standbys]
        if not pools and fallback_master and self._topology.writable is not None:
            pools = [self._topology.writable.pool]
        return pools

    def pool_is_master(self, pool: Any) -> bool:
        """True when ``pool`` belongs to the primary that takes writes."""
        writable = self._topology.writable
        return writable is not None and writable.pool is pool

    def pool_is_replica(self, pool: Any) -> bool:
        """True when ``pool`` belongs to a usable replica."""
        return any(e.pool is pool for e in self._topology.standbys)

    def acquire_from_pool(
        self, pool: Any, timeout: float | None = None, **kwargs: Any
    ) -> AcquireContext:
        """Acquire from one specific pool of this manager, whatever its host's role."""
        limit = self._options.acquire_timeout if timeout is None else positive(timeout, "timeout")
        request = AcquireRequest(
            read_only=False,
            fallback_master=False,
            weight=0.0,
            lag_limit=None,
            timeout=limit,
            kwargs=kwargs,
            entry=self._entry_of(pool),
        )
        return AcquireContext(self, request)

    async def release_to_pool(self, connection: Any, pool: Any, **kwargs: Any) -> None:
        """Give ``connection`` back to ``pool`` (it must have come from that pool)."""
        entry = self._entry_of(pool)
        source = self._handout.host_of(connection)
        if source is not None and source is not entry:
            raise ValueError(f"the connection came from {source.state.name}, not from this pool")
        if source is None:
            self._handout.add(connection, entry)
        await self.release(connection, **kwargs)

    def register_connection(self, connection: Any, pool: Any) -> None:
        """Record that ``connection`` came from ``pool``, so :meth:`release` can give it back."""
        self._handout.add(connection, self._entry_of(pool))

    def get_pool_freesize(self, pool: Any) -> int:
        """How many acquires ``pool`` can serve right now (idle plus unopened capacity)."""
        return self._driver.pool_stats(pool).free

    def is_connection_closed(self, connection: Any) -> bool:
        """True when ``connection`` is closed or broken."""
        return self._driver.is_connection_closed(connection)

    def get_last_response_time(self, pool: Any) -> float | None:
        """Median round-trip time (seconds) of the probes of ``pool``'s host over the stopwatch
        window (``stopwatch_window_size`` probes), as in hasql; None before the first probe."""
        return self._entry_of(pool).response_time

    def host(self, pool: Any) -> str:
        """``host:port`` of the host ``pool`` belongs to (the key of every per-host figure)."""
        return self._entry_of(pool).state.name

    def pool_stats(self, pool: Any) -> PoolStats:
        """``pool``'s size figures (see :class:`~hasql_core.driver.PoolStats`)."""
        return self._driver.pool_stats(pool)

    @property
    def stale_pool_count(self) -> int:
        """Usable replicas beyond the manager's lag limit (hasql 0.10)."""
        return len(self._topology.standbys) - len(self._topology.fresh_standbys)

    def get_stale_pools(self) -> list[Any]:
        """Pools of the usable replicas beyond the manager's lag limit (hasql 0.10)."""
        fresh = set(self._topology.fresh_standbys)
        return [e.pool for e in self._topology.standbys if e not in fresh]

    @property
    def pools(self) -> list[Any]:
        """Every open pool, in DSN order."""
        return [e.pool for e in self._entries if e.pool is not None]

    @property
    def master_pool_count(self) -> int:
        """Usable hosts that claim to be primary (hasql's meaning): 1 normally, 0 during a
        failover, 2 or more during a split brain (of which only the winner takes writes)."""
        return sum(
            1
            for e in self._entries
            if e.state.role is Role.PRIMARY and e.pool is not None and e.suspect is None
        )

    @property
    def replica_pool_count(self) -> int:
        """Usable replicas within the manager's lag limit."""
        return len(self._topology.fresh_standbys)

    @property
    def available_pool_count(self) -> int:
        """Hosts that answered their latest probe and have an open pool."""
        return sum(1 for e in self._entries if e.state.available and e.pool is not None)

    def __iter__(self) -> Iterator[Any]:
        """The pools of available hosts."""
        return iter([e.pool for e in self._entries if e.state.available and e.pool is not None])


class HasqlPolicyRouter:
    """Routes acquires through a balancer policy written for hasql (an async ``get_pool``)."""

    __slots__ = ("_manager", "_policy")

    def __init__(self, policy: AbstractBalancerPolicy, manager: HasqlPoolApi) -> None:
        self._policy = policy
        self._manager = manager

    async def route(self, request: AcquireRequest, deadline: float) -> AcquireRequest:
        """``request`` pinned to the host of the pool the policy returns, within ``deadline``.

        Raises :class:`NoAvailablePoolError` when the policy returns no pool, and
        :class:`AcquireTimeoutError` when it does not return in time.
        """
        weight = request.weight if request.read_only and request.weight > 0.0 else None
        name = type(self._policy).__qualname__
        try:
            pool = await await_until(
                self._policy.get_pool(
                    read_only=request.read_only,
                    fallback_master=request.fallback_master,
                    master_as_replica_weight=weight,
                ),
                deadline,
            )
        except asyncio.TimeoutError as error:
            raise AcquireTimeoutError(
                f"the balancer policy {name} found no pool for {request.describe()} within "
                f"{request.timeout:g}s. Hosts: {self._manager._topology.describe()}"
            ) from error
        if pool is None:
            raise NoAvailablePoolError(
                f"the balancer policy {name} returned no pool for {request.describe()}. Hosts: "
                + self._manager._topology.describe()
            )
        return request.pinned_to(self._manager._entry_of(pool))


def hasql_style_policy(value: object) -> type[AbstractBalancerPolicy] | None:
    """``value`` when it is a policy class written for hasql (else None); refuses the abstract
    base itself and subclasses that do not implement ``_get_pool``."""
    if not (isinstance(value, type) and issubclass(value, AbstractBalancerPolicy)):
        return None
    if value is AbstractBalancerPolicy or getattr(value, "__abstractmethods__", None):
        raise ConfigurationError(
            f"{value.__qualname__} cannot serve as a balancer policy: it is abstract. Subclass "
            "hasql_core.balancer_policy.AbstractBalancerPolicy and implement "
            "async def _get_pool(self, read_only, fallback_master=False, "
            "choose_master_as_replica=False), or pass a built-in policy name "
            "('greedy', 'round_robin', 'random_weighted')."
        )
    return value


def resolve_balancer(
    manager: HasqlPoolApi,
    value: str | type[BalancerPolicy] | BalancerPolicy | type[Any],
    options: Mapping[str, Any] | None,
) -> tuple[BalancerPolicy, HasqlPolicyRouter | None]:
    """The balancer policy ``balancer_policy=value`` names, built with ``options``, and no
    router; for a policy class written for hasql, the greedy policy (for the choices the manager
    makes itself) and a router through an instance of that class, built for ``manager``."""
    hasql_policy = hasql_style_policy(value)
    if hasql_policy is None:
        return plugins.make_policy(value, options), None
    balancer = plugins.make_policy("greedy", None)
    return balancer, HasqlPolicyRouter(hasql_policy(manager, **(options or {})), manager)
