"""The matrix rows: one fault script each, and the record of what a script did when.

Every cluster has a primary ``node0`` and two streaming replicas ``node1`` and ``node2``; the
application reaches each node through its fault proxy. ``node1`` is a synchronous standby (so
promoting it loses no acknowledged write), except in the split-brain row, whose old primary must be
able to acknowledge writes again when it comes back. Faults of a replica hit ``node2`` (freezing
the synchronous standby would stop every commit, a different scenario).

A script records each step (requested and finished, monotonic and wall clock), the primary over
time (a promotion request makes the promoted node the primary from that instant), the instants
from which writes must resume on a given node and reads on a given replica, and how to undo a
fault still in place at the end of the run (thaw, proxy back to pass, replay resumed).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable

from hasql_core.testing.cluster import LocalCluster

from . import settings as S
from .workload import HostNames


@dataclasses.dataclass
class Event:
    """One step of a fault script."""

    label: str
    start: float
    end: float
    wall_start: float
    wall_end: float
    error: str | None = None


@dataclasses.dataclass(frozen=True)
class Expectation:
    """Operations of ``kind`` must succeed on ``node`` within ``bound`` s of ``at`` (monotonic)."""

    kind: str
    node: str
    at: float
    bound: float
    reason: str


class Scenario:
    """What a fault script can do to the cluster, and the record of what it did."""

    def __init__(self, cluster: LocalCluster, settings: S.Settings, names: HostNames) -> None:
        self.cluster = cluster
        self.settings = settings
        self.names = names
        self.events: list[Event] = []
        #: (wall clock time, node): the primary from that time on.
        self.primaries: list[tuple[float, str]] = [(0.0, cluster.primary.name)]
        self.expectations: list[Expectation] = []
        #: Wall clock time of the first promotion (None: no promotion).
        self.promoted_at: float | None = None
        #: When the fault began (monotonic), the reference of every time in the report.
        self.fault_at: float | None = None
        self._undo: dict[str, Callable[[], None]] = {}
        #: Called in the worker thread after every step (the cell records server processes).
        self.on_step: Callable[[], None] | None = None
        self.refresh_names()

    def refresh_names(self) -> None:
        """Record every node's current server port and its proxy's port."""
        for node in self.cluster.nodes:
            self.names.add(node.port, node.name)
            if node.proxy is not None:
                self.names.add(node.proxy.port, node.name)

    async def step(self, label: str, action: Callable[[], None]) -> Event:
        """Run the blocking cluster ``action`` in a thread; record when it was asked and done."""

        def run() -> Event:
            event = Event(label, time.monotonic(), 0.0, time.time(), 0.0)
            try:
                action()
            except Exception as error:
                event.error = f"{type(error).__name__}: {error}"
            event.end, event.wall_end = time.monotonic(), time.time()
            if self.on_step is not None:
                self.on_step()
            return event

        event = await asyncio.to_thread(run)
        self.events.append(event)
        if self.fault_at is None:
            self.fault_at = event.start
        self.refresh_names()
        if event.error is not None:
            raise HarnessError(f"{label} failed: {event.error}")
        return event

    async def fault(self, label: str, action: Callable[[], None], undo: Callable[[], None]) -> None:
        """Inject a fault; ``undo`` heals it if it is still in place at the end of the run."""
        await self.step(label, action)
        self._undo[label] = undo

    async def heal(self, label: str, heal_label: str) -> Event:
        """Undo the fault ``label`` now."""
        undo = self._undo.pop(label)
        return await self.step(heal_label, undo)

    async def heal_all(self) -> None:
        """Undo every fault still in place (newest first); errors are recorded, not raised."""
        for label in reversed(list(self._undo)):
            undo = self._undo.pop(label)
            with contextlib.suppress(HarnessError):
                await self.step(f"teardown: undo {label}", undo)

    async def sleep(self, seconds: float) -> None:
        """Let the load run for ``seconds``."""
        await asyncio.sleep(seconds)

    def expect(self, kind: str, node: str, at: float, bound: float, reason: str) -> None:
        """Require ``kind`` operations ("write"/"read") to succeed on ``node`` soon after ``at``."""
        self.expectations.append(Expectation(kind, node, at, bound, reason))

    async def promote(self, index: int) -> None:
        """Promote replica ``index``, re-point every other running replica to it.

        The promoted node is the primary from the instant of the request; writes must resume on it
        within :data:`WRITE_RESUME_BOUND` of that instant.
        """
        node = self.cluster.node(index)
        event = await self.step(f"promote {node.name}", lambda: self.cluster.promote(index))
        self.primaries.append((event.wall_start, node.name))
        if self.promoted_at is None:
            self.promoted_at = event.wall_start
        self.expect(
            "write", node.name, event.start, S.WRITE_RESUME_BOUND, f"promotion of {node.name}"
        )
        for other in self.cluster.replicas:
            if other is not node and other.state == "running":
                await self.step(
                    f"repoint {other.name} to {node.name}",
                    lambda other=other: self.cluster.repoint(other, node),  # type: ignore[misc]
                )

    def primary_at(self, wall: float) -> str:
        """The node that was the primary at wall clock time ``wall``."""
        current = self.primaries[0][1]
        for since, name in self.primaries:
            if wall >= since:
                current = name
        return current


class HarnessError(Exception):
    """A cluster operation of the fault script failed: the run says nothing about the library."""


Script = Callable[[Scenario], Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One matrix row."""

    name: str
    title: str
    script: Script
    #: Whether node1 is a synchronous standby (every acknowledged write survives its promotion).
    synchronous: bool = True
    #: The manager's max_lag in this row (None: no limit).
    max_lag: float | None = None


def _release_sync_waiters(cluster: LocalCluster, index: int) -> Callable[[], None]:
    """Thaw a frozen old primary and drop its synchronous standby (fencing it as an operator
    would), so backends waiting for a standby that left finish and the server ends the backends of
    connections the application closed."""

    def undo() -> None:
        node = cluster.node(index)
        if node.state == "frozen":
            cluster.thaw(index)
        if node.state == "running" and node.role == "primary":
            cluster.execute(index, "ALTER SYSTEM SET synchronous_standby_names = ''")
            cluster.execute(index, "SELECT pg_reload_conf()")

    return undo


async def crash_primary(s: Scenario) -> None:
    """kill -9 of the primary, node1 promoted ``promote_after`` s later, node2 re-pointed."""
    await s.step("kill node0", lambda: s.cluster.kill(0))
    await s.sleep(s.settings.promote_after)
    await s.promote(1)


async def freeze_primary(s: Scenario) -> None:
    """SIGSTOP of the primary, node1 promoted; the old primary stays frozen to the end."""
    await s.fault("freeze node0", lambda: s.cluster.freeze(0), _release_sync_waiters(s.cluster, 0))
    await s.sleep(s.settings.promote_after)
    await s.promote(1)


async def split_brain(s: Scenario) -> None:
    """SIGSTOP of the primary, node1 promoted, then the old primary thawed: two primaries, the old
    one on the older timeline; writes must go to the new one only."""
    await s.step("freeze node0", lambda: s.cluster.freeze(0))
    await s.sleep(s.settings.promote_after)
    await s.promote(1)
    await s.sleep(s.settings.after_promotion)
    await s.step("thaw node0 (a primary again, on the old timeline)", lambda: s.cluster.thaw(0))


async def freeze_replica(s: Scenario) -> None:
    """SIGSTOP of replica node2 for ``hold`` s; reads must come back to it after the thaw."""
    await s.fault("freeze node2", lambda: s.cluster.freeze(2), lambda: s.cluster.thaw(2))
    await s.sleep(s.settings.hold)
    event = await s.heal("freeze node2", "thaw node2")
    s.expect("read", "node2", event.end, S.READ_RESUME_BOUND, "thaw of node2")


async def blackhole_primary(s: Scenario) -> None:
    """The primary's proxy drops all traffic both ways for ``hold`` s (no promotion); writes must
    resume on it after the network heals."""
    proxy = s.cluster.proxy(0)
    await s.fault(
        "blackhole node0", lambda: proxy.set_mode("blackhole"), lambda: proxy.set_mode("pass")
    )
    await s.sleep(s.settings.hold)
    event = await s.heal("blackhole node0", "node0 reachable again")
    s.expect("write", "node0", event.end, S.WRITE_RESUME_BOUND, "end of the blackhole")


async def reset_connections(s: Scenario) -> None:
    """Every connection to node0 and node1 reset (RST), and new ones too, for 0.5 s."""
    proxies = [s.cluster.proxy(0), s.cluster.proxy(1)]

    def reset() -> None:
        for proxy in proxies:
            proxy.set_mode("reset")

    def restore() -> None:
        for proxy in proxies:
            proxy.set_mode("pass")

    await s.fault("reset node0 and node1", reset, restore)
    await s.sleep(0.5)
    event = await s.heal("reset node0 and node1", "node0 and node1 reachable again")
    s.expect("write", "node0", event.end, S.WRITE_RESUME_BOUND, "end of the resets")
    s.expect("read", "node1", event.end, S.READ_RESUME_BOUND, "end of the resets")


async def latency_replica(s: Scenario) -> None:
    """200 ms added each way on replica node2's proxy for ``hold`` s."""
    proxy = s.cluster.proxy(2)
    await s.fault(
        "200 ms latency on node2",
        lambda: proxy.set_mode("latency", delay=0.2),
        lambda: proxy.set_mode("pass"),
    )
    await s.sleep(s.settings.hold)
    event = await s.heal("200 ms latency on node2", "node2 latency removed")
    s.expect("read", "node2", event.end, S.READ_RESUME_BOUND, "removal of the latency")


async def paused_replay(s: Scenario) -> None:
    """Replay paused on replica node2 for ``hold`` s (> max_lag) while writes go on."""
    await s.fault(
        "pause replay on node2",
        lambda: s.cluster.pause_replay(2),
        lambda: s.cluster.resume_replay(2),
    )
    await s.sleep(s.settings.hold)
    event = await s.heal("pause replay on node2", "resume replay on node2")
    s.expect("read", "node2", event.end, S.READ_RESUME_BOUND, "resumption of replay on node2")


async def all_down(s: Scenario) -> None:
    """Every host stopped (immediate shutdown), then started again, primary first."""

    def stop_all() -> None:
        for index in (0, 1, 2):
            s.cluster.stop(index, "immediate")

    def start_all() -> None:
        for index in (0, 1, 2):
            if s.cluster.node(index).state == "stopped":
                s.cluster.start_node(index)

    await s.fault("stop every node", stop_all, start_all)
    await s.sleep(s.settings.down)
    event = await s.heal("stop every node", "start every node")
    s.expect("write", "node0", event.end, S.WRITE_RESUME_BOUND, "restart of every node")
    for name in ("node1", "node2"):
        s.expect("read", name, event.end, S.READ_RESUME_BOUND, "restart of every node")


async def switchover(s: Scenario) -> None:
    """Planned switchover: clean (fast) shutdown of the primary, node1 promoted at once."""
    await s.step("stop node0 (fast)", lambda: s.cluster.stop(0, "fast"))
    await s.promote(1)


async def rejoin(s: Scenario) -> None:
    """kill -9 of the primary, node1 promoted, then the old primary rewound and rejoined as a
    replica of node1; reads must reach it."""
    await s.step("kill node0", lambda: s.cluster.kill(0))
    await s.sleep(s.settings.promote_after)
    await s.promote(1)
    await s.sleep(s.settings.after_promotion)
    event = await s.step("rejoin node0 as a replica of node1", lambda: s.cluster.rejoin(0, 1))
    s.expect("read", "node0", event.end, S.READ_RESUME_BOUND, "rejoin of node0")


FAULTS: dict[str, Fault] = {
    fault.name: fault
    for fault in (
        Fault("crash_primary", "crash of the primary (kill -9), replica promoted", crash_primary),
        Fault("freeze_primary", "frozen primary (SIGSTOP), replica promoted", freeze_primary),
        Fault(
            "split_brain",
            "split brain: old primary thawed after a promotion",
            split_brain,
            synchronous=False,
        ),
        Fault("freeze_replica", "frozen replica (SIGSTOP), then thawed", freeze_replica),
        Fault("blackhole_primary", "primary blackholed by its proxy, then back", blackhole_primary),
        Fault(
            "reset_connections", "connections reset (RST) on primary + replica", reset_connections
        ),
        Fault("latency_replica", "200 ms latency each way on a replica", latency_replica),
        Fault(
            "paused_replay",
            f"replica replay paused (max_lag={S.MAX_LAG:g} s)",
            paused_replay,
            max_lag=S.MAX_LAG,
        ),
        Fault("all_down", "every host down, then back", all_down),
        Fault("switchover", "planned switchover (clean stop, promote)", switchover),
        Fault("rejoin", "old primary rejoined as a replica (pg_rewind)", rejoin),
    )
}
