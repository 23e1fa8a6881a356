"""``hasql demo``: a local cluster fails over under load; check that no acknowledged write is lost.

It starts a primary and replicas (``node1`` synchronous, so every acknowledged write is on it when it
is promoted), runs writer and reader tasks through a :class:`~hasql_core.PoolManager` and plays scenes:
steady state, the primary killed and ``node1`` promoted, a replica frozen, a replica lagging past the
limit, the old primary rejoined. Each write records its id and the host that acknowledged it; each read
checks it ran on a standby and saw every write acknowledged long enough ago for the lag limit. The
summary gives, per scene, failures, how long writes took to resume after the promotion, reads served by
the wrong role or beyond the lag limit, and how many acknowledged writes the final primary is missing.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ..errors import AcquireTimeoutError, ClusterError, HasqlError
from ..host_state import HostState, Role
from ..manager import PoolManager
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    captured_logs,
    load_driver,
    run_async,
    stdout_console,
)
from ._metrics import OBSERVER as METRICS_OBSERVER
from ._metrics import prometheus_metrics
from ._render import hosts_table
from ._sql import fetch_row

#: Replicas beyond this lag (seconds) must not serve reads.
MAX_LAG = 1.0
REFRESH_DELAY = 0.5
REFRESH_TIMEOUT = 1.0
#: One write or read (acquire + statement) is abandoned after this long.
OP_TIMEOUT = 3.0
#: How long an acquire may wait for a suitable host.
ACQUIRE_TIMEOUT = 1.0
#: A read from a standby within the lag limit must see every write acknowledged this long before it
#: started: the limit, plus how old the monitor's view can be (one refresh delay and one probe), plus
#: scheduling slack.
STALENESS_ALLOWANCE = MAX_LAG + REFRESH_DELAY + REFRESH_TIMEOUT + 0.25
WRITERS = 2
READERS = 3
TABLE = "hasql_demo"


@attrs.define
class Scene:
    """Counters of one scene."""

    number: int
    title: str
    started: float = 0.0
    writes_ok: int = 0
    writes_failed: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    reads_refused: int = 0
    wrong_role: int = 0
    stale: int = 0
    promoted_mid_read: int = 0
    resumed_after: float | None = None
    note: str = ""


class Demo:
    """The workload, the scenes and the display."""

    def __init__(
        self,
        cluster: Any,
        driver: str,
        short: bool,
        console: Console,
        metrics: Callable[[], str] | None = None,
    ) -> None:
        self.cluster = cluster
        #: Renders the observer's metrics as Prometheus text (``--metrics``), read before closing.
        self.metrics = metrics
        self.metrics_text: str | None = None
        self.driver = driver
        self.short = short
        self.console = console
        self.live_mode = console.is_terminal
        self.pm: PoolManager | None = None
        self.t0 = time.monotonic()
        self.scenes: list[Scene] = []
        self.scene = Scene(0, "starting")
        self.next_id = 0
        self.acked: dict[int, int] = {}  # id -> port that acknowledged it
        self.ack_times: list[float] = []  # monotonic time of each acknowledgement, in order
        self.ack_max: list[int] = []  # highest id acknowledged up to that time
        self.last_write: tuple[int, float] | None = None
        self.last_read: tuple[int, float] | None = None
        self.last_error = ""
        self.events: deque[str] = deque(maxlen=10)
        self.killed_at: float | None = None
        self.promoted_at: float | None = None
        self.promoted_port: int | None = None
        self.stopping = False
        self.resume_seen = False
        self.totals = [0, 0]  # writes, reads acknowledged
        self.rates = (0.0, 0.0)

    # -- helpers -------------------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since the demo started."""
        return time.monotonic() - self.t0

    def node_name(self, port: int) -> str:
        """``nodeN`` for a port of the cluster."""
        for node in self.cluster.nodes:
            if node.port == port:
                return str(node.name)
        return str(port)

    def log(self, message: str) -> None:
        """Record an event; print it at once when not in live mode."""
        line = f"{self.now():6.1f}s  {message}"
        self.events.append(line)
        if not self.live_mode:
            self.console.print(line, markup=False, highlight=False)

    def acked_before(self, moment: float) -> int:
        """The highest id acknowledged at or before ``moment`` (monotonic); 0 if none."""
        index = bisect.bisect_right(self.ack_times, moment)
        return self.ack_max[index - 1] if index else 0

    # -- workload ------------------------------------------------------------------------------------

    async def writer(self) -> None:
        """Insert sequential ids through acquire_master; record each acknowledged one."""
        assert self.pm is not None
        pm = self.pm
        while not self.stopping:
            self.next_id += 1
            wid = self.next_id
            sql = f"INSERT INTO {TABLE} (id) VALUES ({wid}) RETURNING inet_server_port()"

            async def op(sql: str = sql) -> Any:
                async with pm.acquire_master(timeout=ACQUIRE_TIMEOUT) as conn:
                    return await fetch_row(conn, sql)

            try:
                row = await asyncio.wait_for(op(), OP_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self.scene.writes_failed += 1
                self.last_error = f"write: {type(error).__name__}"
                await asyncio.sleep(0.05)
                continue
            moment = time.monotonic()
            port = int(row[0])
            self.acked[wid] = port
            self.ack_times.append(moment)
            self.ack_max.append(max(wid, self.ack_max[-1] if self.ack_max else 0))
            self.scene.writes_ok += 1
            self.totals[0] += 1
            self.last_write = (port, moment)
            if self.promoted_at is not None and not self.resume_seen and port == self.promoted_port:
                self.resume_seen = True
                self.scene.resumed_after = moment - self.promoted_at
                self.log(
                    f"writes resumed on {self.node_name(port)}: "
                    f"{moment - self.promoted_at:.2f}s after the promotion"
                )
            await asyncio.sleep(0.005)

    async def reader(self) -> None:
        """Read the highest visible id through acquire_replica; check role and staleness."""
        assert self.pm is not None
        pm = self.pm
        sql = f"SELECT coalesce(max(id), 0), pg_is_in_recovery(), inet_server_port() FROM {TABLE}"

        async def op() -> Any:
            async with pm.acquire_replica(timeout=ACQUIRE_TIMEOUT) as conn:
                return await fetch_row(conn, sql)

        while not self.stopping:
            before = {state.port: state for state in pm.host_states()}
            started = time.monotonic()
            try:
                row = await asyncio.wait_for(op(), OP_TIMEOUT)
            except asyncio.CancelledError:
                raise
            except AcquireTimeoutError:
                self.scene.reads_refused += 1
                await asyncio.sleep(0.05)
                continue
            except Exception as error:
                self.scene.reads_failed += 1
                self.last_error = f"read: {type(error).__name__}"
                await asyncio.sleep(0.05)
                continue
            max_id, in_recovery, port = int(row[0]), bool(row[1]), int(row[2])
            if not in_recovery:
                seen = before.get(port)
                if seen is not None and seen.role is Role.PRIMARY:
                    self.scene.wrong_role += 1
                    self.log(f"WRONG ROLE: a read was served by primary {self.node_name(port)}")
                else:  # promoted between the monitor's last probe and this read
                    self.scene.promoted_mid_read += 1
            elif max_id < self.acked_before(started - STALENESS_ALLOWANCE):
                self.scene.stale += 1
                self.log(f"STALE READ from {self.node_name(port)}: saw id {max_id}")
            self.scene.reads_ok += 1
            self.totals[1] += 1
            self.last_read = (port, time.monotonic())
            await asyncio.sleep(0.005)

    # -- display -------------------------------------------------------------------------------------

    def _host_summary(self, states: tuple[HostState, ...]) -> str:
        parts = []
        for state in states:
            text = f"{self.node_name(state.port)} {state.role.value}"
            if state.role is Role.STANDBY and state.lag_bytes is not None:
                text += f" lag {state.lag_bytes}B"
            if state.stale:
                text += " (beyond limit)"
            parts.append(text)
        return ", ".join(parts)

    def _served(self, what: tuple[int, float] | None) -> str:
        if what is None:
            return "-"
        return f"{self.node_name(what[0])} ({time.monotonic() - what[1]:.1f}s ago)"

    def render(self) -> RenderableType:
        """The live view: scene, hosts, throughput, failures and recent events."""
        assert self.pm is not None
        scene = self.scene
        states = self.pm.host_states()
        table = hosts_table(states, label=lambda s: self.node_name(s.port))
        stats = Text()
        stats.append(f"writes {self.rates[0]:6.0f}/s  last on {self._served(self.last_write)}\n")
        stats.append(f"reads  {self.rates[1]:6.0f}/s  last on {self._served(self.last_read)}\n")
        stats.append(
            f"this scene: writes failed {scene.writes_failed}, reads failed {scene.reads_failed}, "
            f"refused {scene.reads_refused}, wrong role {scene.wrong_role}, "
            f"beyond lag limit {scene.stale}"
        )
        header = Panel(Text(f"Scene {scene.number}: {scene.title}", style="bold"), expand=False)
        return Group(header, table, stats, Text("\n".join(self.events), style="dim"))

    async def display(self, live: Live | None) -> None:
        """Refresh the view (or print a progress line each second) and log host changes."""
        assert self.pm is not None
        previous: dict[int, tuple[Role, bool]] = {}
        last_totals, last_time, last_print = list(self.totals), time.monotonic(), 0.0
        while True:
            await asyncio.sleep(0.1)
            for state in self.pm.host_states():
                key = (state.role, state.stale)
                old = previous.get(state.port)
                if old is not None and old != key:
                    label = state.role.value + (" beyond lag limit" if state.stale else "")
                    was = old[0].value + (" beyond lag limit" if old[1] else "")
                    self.log(f"{self.node_name(state.port)}: {was} -> {label}")
                previous[state.port] = key
            moment = time.monotonic()
            if moment - last_time >= 1.0:
                span = moment - last_time
                self.rates = (
                    (self.totals[0] - last_totals[0]) / span,
                    (self.totals[1] - last_totals[1]) / span,
                )
                last_totals, last_time = list(self.totals), moment
            if live is not None:
                live.update(self.render())
            elif moment - last_print >= 1.0:
                last_print = moment
                self.console.print(
                    f"{self.now():6.1f}s  writes {self.rates[0]:.0f}/s reads {self.rates[1]:.0f}/s"
                    f" | failed w{self.scene.writes_failed} r{self.scene.reads_failed}"
                    f" refused {self.scene.reads_refused}"
                    f" | {self._host_summary(self.pm.host_states())}",
                    markup=False,
                    highlight=False,
                )

    # -- scenes --------------------------------------------------------------------------------------

    def begin(self, title: str) -> Scene:
        """Start a new scene and announce it."""
        self.scene = Scene(len(self.scenes) + 1, title, started=time.monotonic())
        self.scenes.append(self.scene)
        self.log(f"== Scene {self.scene.number}: {title}")
        return self.scene

    async def hold(self, seconds: float) -> None:
        """Let the workload run for ``seconds`` (scaled down with --short)."""
        await asyncio.sleep(seconds * (0.4 if self.short else 1.0))

    async def blocking(self, what: str, call: Callable[..., Any], *args: Any) -> None:
        """Run a blocking cluster operation in a thread, logging it."""
        self.log(what)
        await asyncio.to_thread(call, *args)

    async def play(self) -> None:
        """Every scene in order."""
        cluster = self.cluster
        old_primary, new_primary = cluster.nodes[0], cluster.nodes[1]
        others = cluster.nodes[2:]

        self.begin("steady state")
        await self.hold(6)

        scene = self.begin(f"kill -9 the primary {old_primary.name}, promote {new_primary.name}")
        await self.blocking(f"kill -9 {old_primary.name}", cluster.kill, old_primary)
        self.killed_at = time.monotonic()
        await asyncio.sleep(0.5)  # a cluster manager notices and decides
        await self.blocking(f"promote {new_primary.name}", cluster.promote, new_primary)
        self.promoted_at, self.promoted_port = time.monotonic(), new_primary.port
        for replica in others:
            await self.blocking(
                f"re-point {replica.name} to {new_primary.name}",
                cluster.repoint,
                replica,
                new_primary,
            )
        await self.hold(8)
        if scene.resumed_after is None:
            scene.note = "writes did not resume"

        victim = others[-1] if others else None
        if victim is None:
            self.begin("freeze a replica").note = "skipped: no replica left (use --replicas 2+)"
            self.begin("lag past the limit").note = "skipped: no replica left"
        else:
            self.begin(f"freeze replica {victim.name} (SIGSTOP), then thaw it")
            await self.blocking(f"freeze {victim.name}", cluster.freeze, victim)
            await self.hold(4)
            await self.blocking(f"thaw {victim.name}", cluster.thaw, victim)
            await self.hold(3)

            self.begin(f"replica {victim.name} lags past the {MAX_LAG:g}s limit")
            await self.blocking(f"pause replay on {victim.name}", cluster.pause_replay, victim)
            await self.hold(5)
            await self.blocking(f"resume replay on {victim.name}", cluster.resume_replay, victim)
            await self.hold(3)

        self.begin(f"rejoin {old_primary.name} as a replica (pg_rewind)")
        await self.blocking(
            f"pg_rewind {old_primary.name} and start it as a replica of {new_primary.name}",
            cluster.rejoin,
            old_primary,
            new_primary,
        )
        await self.hold(5)

    async def run(self) -> int:
        """Start the manager and the workload, play the scenes, check and summarise."""
        cluster = self.cluster
        await asyncio.to_thread(
            cluster.execute,
            cluster.primary,
            f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())",
        )
        await asyncio.to_thread(cluster.wait_replayed)
        self.pm = PoolManager(
            cluster.dsn,
            driver=self.driver,
            refresh_delay=REFRESH_DELAY,
            refresh_timeout=REFRESH_TIMEOUT,
            acquire_timeout=ACQUIRE_TIMEOUT,
            max_lag=MAX_LAG,
            master_as_replica_weight=0.0,
            observers=[METRICS_OBSERVER] if self.metrics is not None else [],
        )
        tasks: list[asyncio.Task[None]] = []
        live: Live | None = None
        try:
            await self.pm.ready(masters_count=1, replicas_count=len(cluster.nodes) - 1, timeout=15)
            self.t0 = time.monotonic()
            if self.live_mode:
                live = Live(self.render(), console=self.console, refresh_per_second=10)
                live.start()
            tasks = [asyncio.create_task(self.writer()) for _ in range(WRITERS)]
            tasks += [asyncio.create_task(self.reader()) for _ in range(READERS)]
            tasks.append(asyncio.create_task(self.display(live)))
            await self.play()
            self.stopping = True
            await asyncio.sleep(0.2)
            if self.metrics is not None:  # while the manager is open: a closed one is not reported
                self.metrics_text = self.metrics()
        finally:
            self.stopping = True
            await self.cleanup(tasks, live)
        return await self.summarise()

    async def cleanup(self, tasks: list[asyncio.Task[None]], live: Live | None) -> None:
        """Stop the workload and the manager, bounded, also when interrupted mid-scene.

        A frozen node is thawed and paused replay resumed first, so no connection waits on them.
        """
        for node in self.cluster.nodes:
            with contextlib.suppress(Exception):
                if node.state == "frozen":
                    await asyncio.to_thread(self.cluster.thaw, node)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if live is not None:
            live.stop()
        if self.pm is not None:
            try:
                await asyncio.wait_for(self.pm.close(), 5)
            except (asyncio.TimeoutError, HasqlError):
                await self.pm.terminate()

    async def summarise(self) -> int:
        """Print the summary per scene and the final checks; return the exit code."""
        cluster = self.cluster
        rows = await asyncio.to_thread(cluster.execute, cluster.primary, f"SELECT id FROM {TABLE}")
        present = {int(row[0]) for row in rows}
        missing = [wid for wid in self.acked if wid not in present]

        table = Table(title="Summary per scene", title_justify="left")
        for column in (
            "scene",
            "writes ok",
            "writes failed",
            "reads ok",
            "reads failed",
            "reads refused",
            "wrong role",
            "beyond lag limit",
            "writes resumed",
        ):
            table.add_column(column, justify="left" if column == "scene" else "right")
        for scene in self.scenes:
            took = "-" if scene.resumed_after is None else f"{scene.resumed_after:.2f}s"
            table.add_row(
                f"{scene.number}. {scene.title}" + (f" [{scene.note}]" if scene.note else ""),
                str(scene.writes_ok),
                str(scene.writes_failed),
                str(scene.reads_ok),
                str(scene.reads_failed),
                str(scene.reads_refused),
                str(scene.wrong_role),
                str(scene.stale),
                took,
            )
        console = self.console
        console.print()
        console.print(table)
        wrong = sum(s.wrong_role for s in self.scenes)
        stale = sum(s.stale for s in self.scenes)
        mid = sum(s.promoted_mid_read for s in self.scenes)
        resumed = next((s.resumed_after for s in self.scenes if s.resumed_after is not None), None)
        lines = [
            f"acknowledged writes: {len(self.acked)}",
            f"lost acknowledged writes: {len(missing)}",
            f"reads served by the wrong role: {wrong}",
            f"reads beyond the lag limit: {stale} (a read must see every write acknowledged "
            f"{STALENESS_ALLOWANCE:g}s before it: the {MAX_LAG:g}s limit plus the monitor's delay)",
            f"reads served by a replica promoted since the monitor's last probe: {mid} "
            "(not stale: it holds every write)",
        ]
        if resumed is not None and self.killed_at is not None and self.promoted_at is not None:
            lines.append(
                f"writes resumed {resumed:.2f}s after the promotion "
                f"({resumed + self.promoted_at - self.killed_at:.2f}s after the primary was killed)"
            )
        else:
            lines.append("writes resumed: never")
        failures = []
        if missing:
            failures.append(f"{len(missing)} acknowledged writes missing, e.g. ids {missing[:5]}")
        if wrong:
            failures.append(f"{wrong} reads served by a primary")
        if stale:
            failures.append(f"{stale} reads beyond the lag limit")
        if resumed is None:
            failures.append("writes never resumed after the promotion")
        if not self.acked:
            failures.append("no write was acknowledged")
        lines.append("result: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
        for line in lines:
            console.print(line, markup=False, highlight=False)
        if self.metrics_text is not None:
            console.print("\nmetrics (hasql-opentelemetry, Prometheus text):", markup=False)
            console.print(self.metrics_text, markup=False, highlight=False, soft_wrap=True)
        return EXIT_OK if not failures else EXIT_FAILED


def _new_cluster(replicas: int) -> Any:
    from ..testing.binaries import find_pg_bindir
    from ..testing.cluster import LocalCluster

    try:
        bindir = find_pg_bindir()
    except ClusterError as error:
        raise CliError(f"no PostgreSQL binaries for the demo: {error}") from None
    return LocalCluster(replicas=replicas, synchronous_replica=0, bindir=bindir)


def run(driver_name: str, replicas: int, short: bool, metrics: bool = False) -> int:
    """The ``demo`` command; returns the exit code. The cluster is always closed, also on Ctrl-C.
    With ``metrics``, the manager reports through hasql-opentelemetry and the summary ends with its
    metrics as Prometheus text."""
    load_driver(driver_name)  # fail early, with the install hint, before starting servers
    render_metrics = prometheus_metrics() if metrics else None
    cluster = _new_cluster(replicas)
    console = stdout_console()
    try:
        console.print(
            f"starting a local cluster: a primary and {replicas} replicas (node1 synchronous) ...",
            markup=False,
        )
        try:
            cluster.start()
        except ClusterError as error:
            raise CliError(f"could not start the local cluster: {error}", EXIT_FAILED) from None
        console.print(f"cluster up: {cluster}", markup=False, highlight=False)
        demo = Demo(cluster, driver_name, short, console, render_metrics)
        try:
            with captured_logs(lambda text: demo.log(text)):
                return run_async(demo.run)
        except (HasqlError, OSError) as error:
            text = str(error).replace(cluster.password, "***")
            raise CliError(
                f"the demo failed: {type(error).__name__}: {text}", EXIT_FAILED
            ) from None
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            cluster.close()
        finally:
            signal.signal(signal.SIGINT, previous)
        sys.stdout.flush()
