"""The topology's candidate sets: updated in place for standby changes, always equal to a full
recompute, in DSN order."""

from __future__ import annotations

import random
import statistics
import time

import attrs
import pytest

from hasql_core import HostState, Role, parse_dsn
from hasql_core._events import Events
from hasql_core._topology import HostEntry, LagLimit, Topology
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver


def _topology(hosts: int) -> Topology:
    driver = FakeDriver(FakeCluster(hosts))
    entries = [
        HostEntry(parse_dsn(f"postgresql://u@db{i}:5432/d"), driver, 8) for i in range(hosts)
    ]
    return Topology(entries, LagLimit(seconds=1.0), Events(None))


def _expected(topology: Topology) -> tuple[tuple[HostEntry, ...], tuple[HostEntry, ...]]:
    standbys = tuple(
        e
        for e in topology.entries
        if e.state.role is Role.STANDBY and e.pool is not None and e.suspect is None
    )
    return standbys, tuple(e for e in standbys if not e.state.stale)


def _state(entry: HostEntry, role: Role, lag: float) -> HostState:
    return HostState(
        host=entry.state.host,
        port=entry.state.port,
        role=role,
        wal_lsn=100 if role is not Role.UNAVAILABLE else None,
        receive_lsn=100 if role is Role.STANDBY else None,
        lag_seconds=lag if role is Role.STANDBY else None,
        timeline=1,
    )


@pytest.mark.parametrize("seed", range(8))
def test_candidate_sets_match_a_full_recompute_after_every_change(seed: int):
    rng = random.Random(seed)
    topology = _topology(12)
    entries = topology.entries
    entries[0].pool = object()
    for step in range(400):
        entry = rng.choice(entries[1:])  # db0 stays the primary
        action = rng.randrange(6)
        if step == 0 or entry is entries[0]:
            topology.update(entries[0], _state(entries[0], Role.PRIMARY, 0), time.monotonic())
        if action == 0:  # a pool opens with the probe that sees the host
            opened = entry.pool is None
            entry.pool = entry.pool or object()
            topology.update(entry, _state(entry, Role.STANDBY, 0.0), time.monotonic(), opened)
        elif action == 1:  # the host goes away
            topology.update(entry, _state(entry, Role.UNAVAILABLE, 0.0), time.monotonic())
        elif action == 2:  # falls behind, or catches up
            lag = rng.choice([0.0, 5.0])
            topology.update(entry, _state(entry, Role.STANDBY, lag), time.monotonic())
        elif action == 3:
            topology.suspect(entry)
        elif action == 4:  # a probe that began after the suspicion clears it
            topology.update(entry, attrs.evolve(entry.state), time.monotonic() + 1)
        else:
            topology.mark_stale(entry)
        assert (topology.standbys, topology.fresh_standbys) == _expected(topology), step
    assert topology.writable is entries[0]


def test_response_time_is_the_median_of_the_stopwatch_window():
    entry = _topology(1).entries[0]
    window = 8  # as built by _topology
    rng = random.Random(3)
    seen: list[float] = []
    assert entry.response_time is None
    for _ in range(50):
        rtt = rng.choice([0.001, 0.002, 0.005, rng.random() / 100])
        entry.record_rtt(rtt)
        seen.append(rtt)
        assert entry.response_time == statistics.median(seen[-window:])


def _behind(entry: HostEntry, replayed: int, age: float) -> HostState:
    """A standby state that has replayed up to ``replayed`` (the primary is at 1000)."""
    return attrs.evolve(_state(entry, Role.STANDBY, age), wal_lsn=replayed, receive_lsn=1000)


def test_a_standby_counts_as_older_by_the_allowance_and_stays_stale_until_it_replays():
    topology = _topology(2)
    primary, standby = topology.entries
    primary.pool, standby.pool = object(), object()
    topology.update(primary, attrs.evolve(_state(primary, Role.PRIMARY, 0), wal_lsn=1000), 0.0)
    topology.update(standby, _behind(standby, 500, 0.9), 0.0)
    assert list(topology.fresh_standbys) == [standby]
    # 0.9 s measured, maybe 0.15 s older by now: beyond the 1 s limit.
    topology.update(standby, _behind(standby, 500, 0.9), 0.0, lag_allowance=0.15)
    assert list(topology.fresh_standbys) == []
    assert standby.state.lag_seconds == 0.9  # the measured age is what is reported
    # Stale, and it replayed nothing since: a probe reading a smaller age (clocks, rounding)
    # does not make it fresh again.
    topology.update(standby, _behind(standby, 500, 0.5), 0.0)
    assert list(topology.fresh_standbys) == []
    # It replayed more: judged by its age again.
    topology.update(standby, _behind(standby, 600, 0.5), 0.0)
    assert list(topology.fresh_standbys) == [standby]
