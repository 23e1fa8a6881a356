"""Host choice as a pure function of the topology: no clock, no I/O, one injected random draw."""

from __future__ import annotations

import pytest

from hasql_core import HostState, Role, SplitBrainError, parse_dsn
from hasql_core._acquire import AcquireRequest
from hasql_core._events import Events
from hasql_core._routing import choose_host
from hasql_core._topology import HostEntry, LagLimit, Topology
from hasql_core.policies import RoundRobinPolicy
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver


def _topology(*states: HostState, lag_limit: LagLimit | None = None) -> Topology:
    cluster = FakeCluster(len(states))
    driver = FakeDriver(cluster)
    entries = []
    for state in states:
        entry = HostEntry(parse_dsn(f"postgresql://u@{state.host}:{state.port}/d"), driver, 8)
        entry.state = state
        entry.pool = object()  # an open pool; choice never touches it
        entries.append(entry)
    topology = Topology(entries, lag_limit or LagLimit(), Events(None))
    topology.recompute()
    return topology


def _chosen(topology: Topology, request: AcquireRequest, **kwargs: object) -> HostState:
    entry = choose_host(topology, request, RoundRobinPolicy(), **kwargs)  # type: ignore[arg-type]
    assert entry is not None, "no host chosen"
    return entry.state


def _request(read_only: bool, **kwargs: object) -> AcquireRequest:
    options: dict[str, object] = {
        "fallback_master": False,
        "weight": 0.0,
        "lag_limit": None,
        "timeout": 1.0,
        "kwargs": {},
    }
    options.update(kwargs)
    return AcquireRequest(read_only=read_only, **options)  # type: ignore[arg-type]


PRIMARY = HostState("db0", 5432, Role.PRIMARY, timeline=2)
STANDBY = HostState("db1", 5432, Role.STANDBY, lag_bytes=0, lag_seconds=0.0)
#: Beyond the manager's lag limit: the monitor flags such a standby ``stale``.
BEHIND = HostState("db2", 5432, Role.STANDBY, lag_bytes=10_000, lag_seconds=30.0, stale=True)


def test_writes_go_to_the_primary_and_reads_to_a_standby():
    topology = _topology(PRIMARY, STANDBY)
    assert _chosen(topology, _request(False)) is PRIMARY
    assert _chosen(topology, _request(True)) is STANDBY


def test_a_standby_beyond_the_lag_limit_is_not_chosen_and_fallback_takes_the_primary():
    topology = _topology(PRIMARY, BEHIND, lag_limit=LagLimit(seconds=1.0))
    policy = RoundRobinPolicy()
    assert choose_host(topology, _request(True), policy) is None
    chosen = choose_host(topology, _request(True, fallback_master=True), policy)
    assert chosen is not None and chosen.state is PRIMARY
    # A per-read limit looser than the standby's lag admits it.
    loose = _request(True, lag_limit=LagLimit(seconds=60.0))
    assert _chosen(topology, loose) is BEHIND


def test_master_as_replica_weight_is_a_probability_per_read():
    topology = _topology(PRIMARY)
    policy = RoundRobinPolicy()
    assert choose_host(topology, _request(True, weight=0.3), policy, draw=lambda: 0.29) is not None
    assert choose_host(topology, _request(True, weight=0.3), policy, draw=lambda: 0.31) is None
    assert choose_host(topology, _request(True, weight=1.0), policy, draw=lambda: 0.99) is not None


def test_excluded_hosts_are_never_chosen():
    topology = _topology(PRIMARY, STANDBY)
    policy = RoundRobinPolicy()
    primary, standby = topology.entries
    assert choose_host(topology, _request(False), policy, excluded={primary}) is None
    assert choose_host(topology, _request(True), policy, excluded={standby}) is None


def test_tied_primaries_refuse_writes():
    other = HostState("db1", 5432, Role.PRIMARY, timeline=2)
    topology = _topology(PRIMARY, other)
    with pytest.raises(SplitBrainError, match="same timeline"):
        choose_host(topology, _request(False), RoundRobinPolicy())


def test_higher_timeline_wins_a_split_brain():
    old = HostState("db1", 5432, Role.PRIMARY, timeline=1)
    topology = _topology(PRIMARY, old)
    assert _chosen(topology, _request(False)).host == "db0"
