"""The balancer policy contract: how one host is picked among suitable candidates.

The core decides which hosts are suitable for a request (role, lag, split brain); a policy only picks one
of them. :meth:`BalancerPolicy.choose` runs on the acquire path: it must be synchronous, do no I/O and be
cheap. Policies are found by name through the ``hasql_balancer_policies`` hook.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

from .driver import PoolStats
from .host_state import HostState


class Candidate(Protocol):
    """A host a policy may pick: its latest state, its pool and the pool's figures."""

    @property
    def state(self) -> HostState:
        """The host's latest :class:`HostState`."""

    @property
    def pool(self) -> Any:
        """The driver's pool object for this host."""

    @property
    def response_time(self) -> float | None:
        """Median probe round-trip time over the manager's stopwatch window, in seconds."""

    def pool_stats(self) -> PoolStats:
        """The pool's current size figures (cheap, no I/O)."""

    def free_size(self) -> int:
        """Acquires the host's pool can serve now without waiting: its maximum size minus the
        connections the manager has handed out from it and its acquires waiting there (negative
        when acquires are queued; O(1), no driver call)."""


class BalancerPolicy(abc.ABC):
    """Base class of balancer policies. One instance serves one pool manager.

    Subclasses set :attr:`name` and implement :meth:`choose`. They are constructed without arguments.
    """

    #: The name users pass as ``PoolManager(..., balancer_policy=name)``.
    name: ClassVar[str]

    #: Whether :meth:`choose` is called for writes too (with the writable primary as the only
    #: candidate), e.g. for a policy that records or delays writes. Policies that only spread reads
    #: set it to False, which saves a call on every write.
    sees_writes: ClassVar[bool] = True

    @abc.abstractmethod
    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        """Return one of ``candidates`` (never empty) for a read (``read_only``) or write request."""
