"""What a PoolManager shows of itself: host states, metrics, acquire figures and its settings (a
mixin of ``PoolManager``; reading, never changing, except :meth:`enable_acquire_stats`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ._acquire_stats import AcquireRecorder, AcquireStats
from ._arguments import ManagerOptions
from ._fast_probing import FastProbing
from ._handout import Handout
from ._topology import HostEntry, Topology
from .balancer import BalancerPolicy
from .driver import Driver
from .dsn import Dsn
from .host_state import HostState
from .metrics import ManagerFigures, Metrics, build_metrics


class Introspection:
    """``host_states()``, ``metrics()``, ``acquire_stats()`` and the read-only properties."""

    # Provided by PoolManager.
    _acquire_stats: AcquireRecorder | None
    _balancer: BalancerPolicy
    _causal_primary_reads: int
    _causal_tokens_lost: int
    _closed: bool
    _closing: bool
    _driver: Driver[Any, Any, Any]
    _dsn: list[Dsn]
    _entries: tuple[HostEntry, ...]
    _fast_probing: FastProbing
    _handout: Handout
    _options: ManagerOptions
    _pool_wait_time: float
    _pool_waits: int
    _topology: Topology
    _acquire: Callable[..., Awaitable[Any]]
    _acquire_counted: Callable[..., Awaitable[Any]]
    _give_back: Callable[..., Awaitable[None]]
    _give_back_counted: Callable[..., Awaitable[None]]

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
            self._acquire = self._acquire_counted
            self._give_back = self._give_back_counted

    def acquire_stats(self) -> AcquireStats | None:
        """A snapshot of the acquire figures counted since :meth:`enable_acquire_stats` (see
        :class:`~hasql_core.metrics.AcquireStats`), or ``None`` when they are not enabled. Read it
        from the manager's event loop thread."""
        if self._acquire_stats is None:
            return None
        return self._acquire_stats.snapshot(self._entries, Counter(self._handout.hosts()))

    def metrics(self) -> Metrics:
        """A snapshot of every host's state, pool, acquires and errors (see :class:`Metrics`)."""
        topology = self._topology
        return build_metrics(
            self._entries,
            ManagerFigures(
                handed_out_from=self._handout.hosts(),
                pool_waits=self._pool_waits + sum(e.acquire_count for e in self._entries),
                pool_wait_time=self._pool_wait_time,
                waiting_acquires=self._fast_probing.waiters,
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
        return self._options.monitor.refresh_delay

    @property
    def refresh_timeout(self) -> float:
        """Bound of each monitor connect, probe and pool opening, in seconds."""
        return self._options.monitor.refresh_timeout

    @property
    def pool_factory_kwargs(self) -> Mapping[str, Any]:
        """A read-only copy of the pool options given."""
        return self._options.pool_factory_kwargs

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
