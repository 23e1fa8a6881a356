"""The built-in balancer policies, checked statistically over many picks."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import attrs
import pytest

from hasql_core import HostState, PoolStats
from hasql_core.policies import GreedyPolicy, RandomWeightedPolicy, RoundRobinPolicy


@attrs.define(eq=False)
class Host:
    name: str
    free: int = 5
    response_time: float | None = 0.001
    pool: object = None

    @property
    def state(self) -> HostState:
        return HostState(host=self.name, port=5432)

    def free_size(self) -> int:
        return self.free

    def pool_stats(self) -> PoolStats:
        return PoolStats(min=0, max=10, size=10 - self.free, idle=0, in_use=10 - self.free)


def picks(policy, candidates: Sequence[Host], n: int, read_only: bool = True) -> Counter[str]:
    return Counter(policy.choose(candidates, read_only).name for _ in range(n))


def test_greedy_follows_free_capacity_and_breaks_ties_at_random():
    hosts = [Host("a", free=2), Host("b", free=7), Host("c", free=7), Host("d", free=0)]
    counts = picks(GreedyPolicy(), hosts, 2000)
    assert set(counts) == {"b", "c"}
    assert 850 < counts["b"] < 1150  # an even split of the tie, within 7 sigma
    hosts[0].free = 9
    assert picks(GreedyPolicy(), hosts, 50) == Counter({"a": 50})


def test_round_robin_is_even_and_independent_per_kind():
    hosts = [Host("a"), Host("b"), Host("c")]
    policy = RoundRobinPolicy()
    sequence = [policy.choose(hosts, True).state.host for _ in range(6)]
    assert sequence == ["a", "b", "c", "a", "b", "c"]
    assert policy.choose(hosts, False).state.host == "a"  # writes rotate on their own
    assert policy.choose(hosts, True).state.host == "a"
    assert picks(policy, hosts, 3000) == Counter({"a": 1000, "b": 1000, "c": 1000})


def test_random_weighted_follows_inverse_response_time():
    hosts = [Host("fast", response_time=0.001), Host("slow", response_time=0.003)]
    counts = picks(RandomWeightedPolicy(), hosts, 8000)
    # Weights 1000 : 333 -> expected share 0.75 for the fast host.
    assert counts["fast"] / 8000 == pytest.approx(0.75, abs=0.03)


def test_random_weighted_gives_unknown_hosts_the_mean_weight():
    hosts = [
        Host("a", response_time=0.001),
        Host("b", response_time=0.001),
        Host("new", response_time=None),
    ]
    counts = picks(RandomWeightedPolicy(), hosts, 9000)
    assert counts["new"] / 9000 == pytest.approx(1 / 3, abs=0.03)


def test_greedy_copes_with_any_free_figure():
    # A pool can report less than nothing free (connections being opened beyond the last count):
    # greedy still picks one of the candidates, the least overloaded.
    overloaded, worse = Host("a", free=-1), Host("b", free=-3)
    assert GreedyPolicy().choose([worse, overloaded], True) is overloaded
