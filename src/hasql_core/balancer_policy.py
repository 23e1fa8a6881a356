"""hasql's balancer policy module, kept so imports and custom policies migrate unchanged.

- ``GreedyBalancerPolicy``, ``RoundRobinBalancerPolicy`` and ``RandomWeightedBalancerPolicy`` are
  this library's built-in policies under hasql's names.
- :class:`AbstractBalancerPolicy` is the base of policies written for hasql: a subclass implements
  ``async def _get_pool(read_only, fallback_master=False, choose_master_as_replica=False)`` and reaches
  the pools through ``self._pool_state`` (see :class:`PoolStateProvider`), exactly as with hasql.
  Pass the subclass as ``PoolManager(balancer_policy=MyPolicy)``. Such a policy runs on every acquire
  as a coroutine, as in hasql; a policy written against :class:`hasql_core.BalancerPolicy` is
  cheaper (synchronous, and it gets candidates the core already filtered by role and lag).
"""

from __future__ import annotations

import abc
import random
from typing import Any, Protocol

from .driver import PoolStats
from .policies import GreedyBalancerPolicy, RandomWeightedBalancerPolicy, RoundRobinBalancerPolicy

__all__ = [
    "AbstractBalancerPolicy",
    "BaseBalancerPolicy",
    "GreedyBalancerPolicy",
    "PoolStateProvider",
    "RandomWeightedBalancerPolicy",
    "RoundRobinBalancerPolicy",
]


class PoolStateProvider(Protocol):
    """What a hasql-style policy sees of the manager (``self._pool_state``): the PoolManager."""

    @property
    def master_pool_count(self) -> int:
        """Usable hosts that claim to be primary."""

    @property
    def replica_pool_count(self) -> int:
        """Usable replicas within the lag limit."""

    @property
    def stale_pool_count(self) -> int:
        """Usable replicas beyond the lag limit."""

    async def get_master_pools(self) -> list[Any]:
        """Pools of the primary (waits up to ``acquire_timeout`` for one)."""

    async def get_replica_pools(self, fallback_master: bool = False) -> list[Any]:
        """Pools of the fresh replicas (or the primary's with ``fallback_master``); waits."""

    def get_stale_pools(self) -> list[Any]:
        """Pools of the replicas beyond the lag limit."""

    def get_pool_freesize(self, pool: Any) -> int:
        """Acquires ``pool`` can serve now without waiting."""

    def get_last_response_time(self, pool: Any) -> float | None:
        """Median probe time of ``pool``'s host, in seconds."""

    def host(self, pool: Any) -> str:
        """``host:port`` of ``pool``'s host."""

    def pool_stats(self, pool: Any) -> PoolStats:
        """``pool``'s size figures."""


class AbstractBalancerPolicy(abc.ABC):
    """Base class of balancer policies written for hasql (see the module docstring).

    Constructed by the manager with the manager itself as ``pool_state``. :meth:`get_pool` keeps
    hasql's contract: ``None`` means no pool can serve the request (the acquire then raises
    :class:`~hasql_core.errors.NoAvailablePoolError`).
    """

    def __init__(self, pool_state: PoolStateProvider) -> None:
        self._pool_state = pool_state

    async def get_pool(
        self,
        read_only: bool,
        fallback_master: bool = False,
        master_as_replica_weight: float | None = None,
    ) -> Any | None:
        """The pool for one acquire: draws whether the primary joins a read's candidates (with
        probability ``master_as_replica_weight``), then calls :meth:`_get_pool`."""
        if not read_only and master_as_replica_weight is not None:
            raise ValueError("master_as_replica_weight applies to reads (read_only=True) only")
        as_replica = (
            master_as_replica_weight is not None and random.random() < master_as_replica_weight
        )
        return await self._get_pool(
            read_only=read_only,
            fallback_master=fallback_master or as_replica,
            choose_master_as_replica=as_replica,
        )

    async def _get_candidates(
        self,
        read_only: bool,
        fallback_master: bool = False,
        choose_master_as_replica: bool = False,
    ) -> list[Any]:
        """hasql 0.10's candidate pools: for a read, the fresh replicas, else the primary (with
        ``fallback_master``), else the stale replicas, else whatever arrives first; the primary
        joins them with ``choose_master_as_replica``. For a write, the primary."""
        state = self._pool_state
        candidates: list[Any] = []
        if read_only:
            if state.replica_pool_count > 0:
                candidates.extend(await state.get_replica_pools(fallback_master=False))
            elif fallback_master and state.master_pool_count > 0:
                candidates.extend(await state.get_master_pools())
            elif state.stale_pool_count > 0:
                candidates.extend(state.get_stale_pools())
            else:
                candidates.extend(await state.get_replica_pools(fallback_master=fallback_master))
        joins = choose_master_as_replica and state.master_pool_count and state.replica_pool_count
        if not read_only or joins:
            candidates.extend(p for p in await state.get_master_pools() if p not in candidates)
        return candidates

    @abc.abstractmethod
    async def _get_pool(
        self,
        read_only: bool,
        fallback_master: bool = False,
        choose_master_as_replica: bool = False,
    ) -> Any | None:
        """Return the pool for this request, or None when none can serve it."""


#: hasql's other name for the base class.
BaseBalancerPolicy = AbstractBalancerPolicy
