"""Host choice: which host serves one acquire, decided from the topology as it is now.

A pure function of the topology's candidate sets, the request and one random draw: no I/O, no
waiting, no clock. The acquire loop in :mod:`hasql_core.manager` calls it, and waits for the next
topology update when it returns ``None``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from random import random

from ._acquire import AcquireRequest
from ._topology import HostEntry, Topology
from .balancer import BalancerPolicy
from .errors import SplitBrainError


def choose_host(
    topology: Topology,
    request: AcquireRequest,
    balancer: BalancerPolicy,
    excluded: Collection[HostEntry] = (),
    draw: Callable[[], float] | None = None,
) -> HostEntry | None:
    """The host that should serve ``request`` now, or ``None`` when no host can.

    - A request for one host's pool (``request.entry``) gets that host while its pool is open.
    - A write gets the writable primary, handed to ``balancer`` as the only candidate when the
      policy ``sees_writes``; with two primaries tied on the highest timeline it raises
      :class:`~hasql_core.errors.SplitBrainError` instead (writes are refused, not guessed).
    - A read gets a standby within the lag limit (the request's, else the manager's), picked by
      ``balancer`` when there are several. The primary joins the candidates with probability
      ``request.weight`` (``draw()`` below it; ``draw`` defaults to :func:`random.random`), and
      serves alone when no standby can and ``request.fallback_master`` is set. With
      ``request.stale_fallback``, a standby beyond the lag limit serves when neither can (hasql
      0.10's order: fresh replica, then the primary if allowed, then a stale replica).

    Hosts in ``excluded`` (they just failed under this acquire) are never chosen.
    """
    if request.entry is not None:
        entry = request.entry
        return entry if entry.pool is not None and entry not in excluded else None
    primary = topology.writable
    if primary is not None and excluded and primary in excluded:
        primary = None
    if not request.read_only:
        if primary is None and topology.split_brain_tie:
            raise SplitBrainError(
                "writes refused: these hosts all claim to be primary on the same timeline: "
                + "; ".join(e.state.describe() for e in topology.split_brain_tie)
                + ". Fence or demote all but one of them."
            )
        if primary is None or not balancer.sees_writes:
            return primary
        return balancer.choose((primary,), False)  # type: ignore[return-value]
    limit = request.lag_limit
    candidates: Sequence[HostEntry] = (
        topology.fresh_standbys if limit is None else topology.standbys_within(limit)
    )
    if excluded:
        candidates = [e for e in candidates if e not in excluded]
    weight = request.weight
    if primary is not None and weight > 0.0 and (weight >= 1.0 or (draw or random)() < weight):
        candidates = [*candidates, primary]
    if not candidates:
        if request.fallback_master and primary is not None:
            return primary
        if not request.stale_fallback:
            return None
        candidates = [e for e in topology.standbys if e not in excluded]
        if not candidates:
            return None
    if len(candidates) == 1:
        return candidates[0]
    return balancer.choose(candidates, True)  # type: ignore[return-value]
