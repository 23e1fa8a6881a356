"""The built-in balancer policies, registered through the same hook third-party policies use."""

from __future__ import annotations

import random
from collections.abc import Sequence

from .balancer import BalancerPolicy, Candidate
from .hookspecs import hookimpl


class GreedyPolicy(BalancerPolicy):
    """Pick the candidate whose pool can serve the most acquires right now; random among ties.

    Free capacity is the candidate's ``free_size()``: for the manager's hosts, the pool's maximum
    size minus the connections handed out and the acquires already waiting there, the same for
    every driver. When every pool is busy, that makes greedy join the shortest queue.
    """

    name = "greedy"
    sees_writes = False

    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        """Return a candidate with the most free capacity."""
        if len(candidates) == 2:  # the common case (two replicas), without the lists below
            first, second = candidates
            first_free, second_free = first.free_size(), second.free_size()
            if first_free != second_free:
                return first if first_free > second_free else second
            return first if random.random() < 0.5 else second
        if len(candidates) == 1:
            return candidates[0]
        best = [candidates[0]]
        best_free = candidates[0].free_size()
        for candidate in candidates[1:]:
            free = candidate.free_size()
            if free > best_free:
                best, best_free = [candidate], free
            elif free == best_free:
                best.append(candidate)
        # random.random() is one C call; random.choice() draws its index in Python.
        return best[0] if len(best) == 1 else best[int(random.random() * len(best))]


class RoundRobinPolicy(BalancerPolicy):
    """Rotate evenly through the candidates, with separate rotations for reads and for writes."""

    name = "round_robin"

    def __init__(self) -> None:
        self._turns = {False: 0, True: 0}

    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        """Return the next candidate in this kind of request's rotation."""
        turn = self._turns[read_only]
        self._turns[read_only] = turn + 1
        return candidates[turn % len(candidates)]


class RandomWeightedPolicy(BalancerPolicy):
    """Pick at random, with weights inversely proportional to each host's median probe time.

    A host whose response time is not known yet gets the mean weight of the others (or 1 when no host
    has one), so a new host is neither starved nor flooded.
    """

    name = "random_weighted"
    sees_writes = False

    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        """Return a random candidate, faster hosts more often."""
        if len(candidates) == 1:
            return candidates[0]
        weights: list[float | None] = []
        for candidate in candidates:
            rt = candidate.response_time
            weights.append(1.0 / max(rt, 1e-6) if rt is not None else None)
        known = [w for w in weights if w is not None]
        fill = sum(known) / len(known) if known else 1.0
        return random.choices(candidates, weights=[fill if w is None else w for w in weights])[0]


# hasql's class names, so ``balancer_policy=GreedyBalancerPolicy`` keeps working after migration.
GreedyBalancerPolicy = GreedyPolicy
RoundRobinBalancerPolicy = RoundRobinPolicy
RandomWeightedBalancerPolicy = RandomWeightedPolicy


@hookimpl
def hasql_balancer_policies() -> Sequence[type[BalancerPolicy]]:
    """The built-in policies: greedy, round_robin, random_weighted."""
    return [GreedyPolicy, RoundRobinPolicy, RandomWeightedPolicy]
