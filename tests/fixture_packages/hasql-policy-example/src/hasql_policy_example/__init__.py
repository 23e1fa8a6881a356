"""A third-party balancer policy: always the first candidate in DSN order."""

from collections.abc import Sequence

from hasql_core import BalancerPolicy, Candidate, hookimpl


class FirstHostPolicy(BalancerPolicy):
    """Pick the candidate listed first in the DSN, or with ``last=True`` the one listed last.

    Every decision is recorded in ``decisions`` as ``(read_only, host)``: writes reach it too.
    """

    name = "first_host"

    def __init__(self, last: bool = False) -> None:
        self.last = last
        self.decisions: list[tuple[bool, str]] = []

    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        chosen = candidates[-1] if self.last else candidates[0]
        self.decisions.append((read_only, chosen.state.host))
        return chosen


@hookimpl
def hasql_balancer_policies() -> list[type[BalancerPolicy]]:
    return [FirstHostPolicy]
