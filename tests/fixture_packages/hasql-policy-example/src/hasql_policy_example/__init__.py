"""A third-party balancer policy: always the first candidate in DSN order."""

from collections.abc import Sequence

from hasql_core import BalancerPolicy, Candidate, hookimpl


class FirstHostPolicy(BalancerPolicy):
    """Pick the candidate listed first in the DSN."""

    name = "first_host"

    def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
        return candidates[0]


@hookimpl
def hasql_balancer_policies() -> list[type[BalancerPolicy]]:
    return [FirstHostPolicy]
