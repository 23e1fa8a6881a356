"""Waiting for hosts: ``ready()`` and hasql's ``wait_*`` methods (a mixin of ``PoolManager``).

Every wait is bounded (``timeout``), re-checks after each topology update, and fails at once when it
can never succeed (counts no cluster of the DSN's hosts can reach, a pool that can never be made,
a closed manager).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._arguments import positive
from ._topology import HostEntry, Topology
from .errors import ConfigurationError, ReadyTimeoutError


class Readiness:
    """``ready()``, ``wait_all_ready()``, ``wait_masters_ready()``, ``wait_replicas_ready()`` and
    ``wait_next_pool_check()``."""

    # Provided by PoolManager.
    _entries: tuple[HostEntry, ...]
    _topology: Topology

    if TYPE_CHECKING:

        @property
        def master_pool_count(self) -> int: ...

        @property
        def replica_pool_count(self) -> int: ...

        def _ensure_running(self) -> None: ...

        def _check_open(self) -> None: ...

        def _check_setup(self) -> None: ...

    async def _wait_until(
        self, predicate: Callable[[], bool], timeout: float | None, what: str
    ) -> None:
        self._ensure_running()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not predicate():
            self._check_open()
            self._check_setup()
            if deadline is not None and loop.time() >= deadline:
                raise ReadyTimeoutError(
                    f"timed out after {timeout:g}s waiting for {what}. Hosts: "
                    + self._topology.describe()
                )
            await self._topology.wait_for_update(deadline)

    async def ready(
        self,
        masters_count: int | None = None,
        replicas_count: int | None = None,
        timeout: float = 10,
    ) -> None:
        """Wait until ``masters_count`` primaries and ``replicas_count`` replicas are usable, or,
        with both omitted, until every host is. Both counts must be given or both omitted.
        Raises :class:`ReadyTimeoutError` (an ``asyncio.TimeoutError``) after ``timeout`` seconds.
        """
        if (masters_count is None) != (replicas_count is None):
            raise ConfigurationError(
                "ready() takes masters_count and replicas_count together, or neither "
                "(then it waits for every host)"
            )
        if masters_count is not None and masters_count < 0:
            raise ConfigurationError(f"masters_count must not be negative, got {masters_count}")
        if replicas_count is not None and replicas_count < 0:
            raise ConfigurationError(f"replicas_count must not be negative, got {replicas_count}")
        timeout = positive(timeout, "timeout")
        if masters_count is not None and replicas_count is not None:
            self._check_reachable(masters_count, replicas_count)
        if masters_count is None or replicas_count is None:
            await self._wait_until(self._all_available, timeout, "every host")
            return
        m, r = masters_count, replicas_count
        await self._wait_until(
            # The replica count is a len(); the primary count walks every host, so it goes second.
            lambda: self.replica_pool_count >= r and self.master_pool_count >= m,
            timeout,
            f"{m} primary(ies) and {r} replica(s)",
        )

    def _check_reachable(self, masters: int, replicas: int) -> None:
        """Refuse counts no cluster of these hosts can ever show, instead of waiting them out."""
        hosts = len(self._entries)
        if masters + replicas > hosts:
            raise ConfigurationError(
                f"{masters} primary(ies) and {replicas} replica(s) can never be ready: the DSN "
                f"names {hosts} host(s), and each host is the primary or a replica"
            )

    def _all_available(self) -> bool:
        return all(e.state.available and e.pool is not None for e in self._entries)

    async def wait_all_ready(self, timeout: float | None = None) -> None:
        """Wait until every host is available with an open pool (bounded by ``timeout`` if given)."""
        await self._wait_until(self._all_available, timeout, "every host")

    async def wait_masters_ready(self, masters_count: int, timeout: float | None = None) -> None:
        """Wait until at least ``masters_count`` primaries are usable."""
        self._check_reachable(masters_count, 0)
        await self._wait_until(
            lambda: self.master_pool_count >= masters_count,
            timeout,
            f"{masters_count} primary(ies)",
        )

    async def wait_replicas_ready(self, replicas_count: int, timeout: float | None = None) -> None:
        """Wait until at least ``replicas_count`` replicas are usable."""
        self._check_reachable(0, replicas_count)
        await self._wait_until(
            lambda: self.replica_pool_count >= replicas_count,
            timeout,
            f"{replicas_count} replica(s)",
        )

    async def wait_next_pool_check(self, timeout: float = 10) -> None:
        """Wait until every host has been probed again, by a probe that started after this call."""
        targets = [(e, e.checks + 2) for e in self._entries]
        await self._wait_until(
            lambda: all(e.checks >= n for e, n in targets), timeout, "the next check of every host"
        )
