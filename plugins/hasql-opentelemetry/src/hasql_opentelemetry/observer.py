"""The observer: hasql-core managers' pool and cluster figures as OpenTelemetry metrics.

How the figures get out, and what each costs:

- Everything that is a level or a running total (connections idle and used, pool limits, acquires
  waiting, timeouts, host availability, role, lag, probe time, errors) is an *observable*
  instrument. Its callback runs when a metric reader collects, reads a snapshot of the manager then,
  and costs the acquire path nothing.
- ``db.client.connection.wait_time`` and ``use_time`` are histograms, which OpenTelemetry's API only
  feeds one value at a time (``Histogram.record``, about 5 µs each in the Python SDK). So the manager
  counts them itself, in fixed buckets (``PoolManager.enable_acquire_stats()``, a fraction of a
  microsecond per acquire), and at each collection this observer records the new counts into the
  histograms: for each bucket, as many values as it gained, each equal to the mean of the new
  durations in that bucket. Bucket counts, counts and sums are therefore exact (the histograms use
  the core's bucket bounds, :data:`hasql_core.metrics.TIME_BUCKETS`); min and max are those of the
  bucket means. The recording cost moves from the acquire path to the collection.
- Role changes, failovers and split-brain episodes are counters incremented from the manager's event
  hooks, which run in its monitor when something changes.

Collections may run in any thread (a periodic reader's, a Prometheus scrape's): the snapshot is
always taken in the manager's event loop thread (directly when the collection runs there, else by
scheduling the read on the loop and waiting at most ``read_timeout``; when the loop does not answer
in time, the previous snapshot is reported again).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import math
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from importlib import metadata
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from hasql_core.hookspecs import hookimpl
from hasql_core.host_state import HostState, Role, format_host
from hasql_core.metrics import TIME_BUCKETS, AcquireStats, HostMetrics, TimeHistogram

from . import names

#: The instrumentation scope name this plugin's meter uses.
SCOPE = "hasql_opentelemetry"

try:
    __version__ = metadata.version("hasql-opentelemetry")
except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0"

Attributes = dict[str, str]


class _Snapshot:
    """What one collection reports for one manager, read in the manager's loop thread."""

    __slots__ = ("hosts", "stats", "waiting")

    def __init__(
        self, hosts: Sequence[HostMetrics], stats: AcquireStats | None, waiting: int
    ) -> None:
        self.hosts = tuple(hosts)
        self.stats = stats
        self.waiting = waiting


def _take_snapshot(manager: Any) -> _Snapshot:
    figures = manager.metrics()
    return _Snapshot(figures.hosts, manager.acquire_stats(), figures.waiting_acquires)


class _Exported:
    """How much of one host's histogram has been recorded into OpenTelemetry already."""

    __slots__ = ("counts", "sums")

    def __init__(self) -> None:
        self.counts = [0] * (len(TIME_BUCKETS) + 1)
        self.sums = [0.0] * (len(TIME_BUCKETS) + 1)


class _Watched:
    """One manager this observer reports: where to read it, and what was reported so far."""

    def __init__(self, manager: Any, loop: asyncio.AbstractEventLoop) -> None:
        self.manager = weakref.ref(manager)
        self.loop = loop
        self.thread = threading.get_ident()
        dsns = manager.dsn
        database = next((d.database or d.user or "" for d in dsns), "")
        hosts = [format_host(d.host, d.port) for d in dsns]
        #: ``host:port/dbname`` of each host, in DSN order (the order of ``metrics().hosts``).
        self.pool_names = tuple(
            f"{host}/{d.database or d.user or ''}" for host, d in zip(hosts, dsns, strict=True)
        )
        self.index = {host: i for i, host in enumerate(hosts)}
        self.cluster = {names.CLUSTER: ",".join(hosts) + f"/{database}"}
        self.snapshot: _Snapshot | None = None
        self.wait_exported = [_Exported() for _ in hosts]
        self.use_exported = [_Exported() for _ in hosts]
        #: The last host seen taking writes: another one taking them is a failover.
        self.last_writer: str | None = None
        self.split_brain = False
        #: Held while a snapshot is taken and its histogram counts recorded.
        self.lock = threading.Lock()
        self._attributes: dict[tuple[int, Role], Attributes] = {}

    def host_attributes(self, index: int, role: Role) -> Attributes:
        """``{pool name, role}`` of host ``index``."""
        key = (index, role)
        found = self._attributes.get(key)
        if found is None:
            found = {names.POOL_NAME: self.pool_names[index], names.HOST_ROLE: role.value}
            self._attributes[key] = found
        return found


def _writer(states: Sequence[HostState]) -> str | None:
    """The host taking writes: the one primary not flagged as a split-brain loser (None when there
    is no such host, or more than one while the flags are being updated)."""
    writers = [s.name for s in states if s.writable]
    return writers[0] if len(writers) == 1 else None


def _bucket_value(mean: float, index: int, bounds: Sequence[float]) -> float:
    """``mean`` kept inside bucket ``index`` (above the previous bound, at most its own bound)
    despite rounding."""
    if index < len(bounds):
        mean = min(mean, bounds[index])
    if index > 0:
        mean = max(mean, math.nextafter(bounds[index - 1], math.inf))
    return max(mean, 0.0)


def _record_new(
    instrument: Histogram, exported: _Exported, histogram: TimeHistogram, attributes: Attributes
) -> None:
    """Record into ``instrument`` what ``histogram`` counted since ``exported``."""
    for index, count in enumerate(histogram.counts):
        new = count - exported.counts[index]
        if new <= 0:
            continue
        value = _bucket_value(
            (histogram.sums[index] - exported.sums[index]) / new, index, histogram.boundaries
        )
        for _ in range(new):
            instrument.record(value, attributes)
        exported.counts[index] = count
        exported.sums[index] = histogram.sums[index]


class OpenTelemetryObserver:
    """Reports every :class:`~hasql_core.PoolManager` it observes through OpenTelemetry metrics.

    ``PoolManager(..., observers=["opentelemetry"])`` uses one instance on the global meter provider
    (:func:`hasql_opentelemetry.plugin.default_observer`); pass an instance of your own,
    ``observers=[OpenTelemetryObserver(meter_provider=provider)]``, to use another provider. One
    instance can observe any number of managers; each is reported from its ``hasql_manager_started``
    hook (which also enables the manager's acquire stats) until its ``hasql_manager_closed`` hook.
    See the plugin's README for every metric, its kind, unit and attributes.

    ``read_timeout`` bounds how long a collection in another thread waits for the manager's loop.
    ``histograms=False`` leaves out ``db.client.connection.wait_time`` and ``use_time``, whose
    recording costs each collection about 6 µs per acquire made since the previous one (the
    OpenTelemetry SDK's cost of one ``Histogram.record``, paid for wait and use time).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        read_timeout: float = 1.0,
        histograms: bool = True,
    ) -> None:
        meter = metrics.get_meter(SCOPE, __version__, meter_provider)
        self._read_timeout = read_timeout
        self._histograms = histograms
        self._lock = threading.Lock()
        self._watched: dict[int, _Watched] = {}
        # The first observable instrument's callback takes this collection's snapshots: SDKs call
        # callbacks in the order the instruments were made. Keep it first.
        meter.create_observable_up_down_counter(
            names.CONNECTION_COUNT,
            [self._observe_connection_count],
            unit="{connection}",
            description="Connections open in the pool, by state (idle, used).",
        )
        meter.create_observable_up_down_counter(
            names.CONNECTION_IDLE_MAX,
            [self._per_host(lambda h, s, i: h.pool.max)],
            unit="{connection}",
            description="The most idle connections the pool keeps (its maximum size).",
        )
        meter.create_observable_up_down_counter(
            names.CONNECTION_IDLE_MIN,
            [self._per_host(lambda h, s, i: h.pool.min)],
            unit="{connection}",
            description="The fewest connections the pool keeps open (its minimum size).",
        )
        meter.create_observable_up_down_counter(
            names.CONNECTION_MAX,
            [self._per_host(lambda h, s, i: h.pool.max)],
            unit="{connection}",
            description="The most connections the pool opens.",
        )
        meter.create_observable_up_down_counter(
            names.CONNECTION_PENDING_REQUESTS,
            [self._per_host(lambda h, s, i: None if s is None else s.hosts[i].pending)],
            unit="{request}",
            description="Acquires waiting now for a connection from the pool.",
        )
        meter.create_observable_counter(
            names.CONNECTION_TIMEOUTS,
            [self._per_host(lambda h, s, i: None if s is None else s.hosts[i].timeouts)],
            unit="{timeout}",
            description="Acquires that timed out waiting for a free connection in the pool.",
        )
        self._wait_time: Histogram | None = None
        self._use_time: Histogram | None = None
        if histograms:
            self._wait_time = meter.create_histogram(
                names.CONNECTION_WAIT_TIME,
                unit="s",
                description="Time from acquire() until a connection of this pool was handed out "
                "(waiting for a suitable host included).",
                explicit_bucket_boundaries_advisory=TIME_BUCKETS,
            )
            self._use_time = meter.create_histogram(
                names.CONNECTION_USE_TIME,
                unit="s",
                description="Time from hand-out until the connection was given back.",
                explicit_bucket_boundaries_advisory=TIME_BUCKETS,
            )
        meter.create_observable_up_down_counter(
            names.HOST_AVAILABLE,
            [self._per_host(lambda h, s, i: int(h.state.available))],
            unit="{host}",
            description="1 when the host answered its latest probe, else 0.",
        )
        meter.create_observable_up_down_counter(
            names.HOST_ROLE_STATE,
            [self._observe_roles],
            unit="{host}",
            description="1 for the host's current role (attribute hasql.host.role), 0 for the others.",
        )
        meter.create_observable_gauge(
            names.HOST_LAG_TIME,
            [self._per_host(lambda h, s, i: h.state.lag_seconds)],
            unit="s",
            description="Replication lag of a standby: age of its last replayed transaction "
            "(0 when caught up).",
        )
        meter.create_observable_gauge(
            names.HOST_LAG_WAL,
            [self._per_host(lambda h, s, i: h.state.lag_bytes)],
            unit="By",
            description="Replication lag of a standby: WAL not replayed yet, against the primary.",
        )
        meter.create_observable_gauge(
            names.HOST_PROBE_DURATION,
            [self._per_host(lambda h, s, i: h.state.rtt)],
            unit="s",
            description="Round-trip time of the host's latest successful probe.",
        )
        meter.create_observable_up_down_counter(
            names.HOST_STALE,
            [self._per_host(lambda h, s, i: int(h.state.stale))],
            unit="{host}",
            description="1 for a standby beyond the manager's lag limit (not used for reads).",
        )
        meter.create_observable_up_down_counter(
            names.HOST_HELD_BACK,
            [self._per_host(lambda h, s, i: int(h.held_back))],
            unit="{host}",
            description="1 while the host gets no new acquires until its next probe answers.",
        )
        meter.create_observable_counter(
            names.HOST_ERRORS,
            [self._observe_errors],
            unit="{error}",
            description="Failures by kind (error.type): probes, pool opening, handed-out "
            "connections, releases.",
        )
        meter.create_observable_counter(
            names.HOST_DISCARDED,
            [self._per_host(lambda h, s, i: h.discarded)],
            unit="{connection}",
            description="Connections closed instead of given back to the pool.",
        )
        meter.create_observable_counter(
            names.ACQUIRE_LAG_REFUSALS,
            [self._per_cluster(lambda s: None if s.stats is None else s.stats.lag_refusals)],
            unit="{acquire}",
            description="Reads that found every available replica beyond the lag limit.",
        )
        meter.create_observable_counter(
            names.ACQUIRE_UNSERVED_TIMEOUTS,
            [self._observe_unserved],
            unit="{timeout}",
            description="Acquires that timed out because no host could serve them.",
        )
        meter.create_observable_up_down_counter(
            names.ACQUIRE_WAITING,
            [self._per_cluster(lambda s: s.waiting)],
            unit="{request}",
            description="Acquires waiting now for a host of the role they need.",
        )
        self._role_changes = meter.create_counter(
            names.HOST_ROLE_CHANGES,
            unit="{change}",
            description="Changes of a host's role (hasql.host.previous_role -> hasql.host.role), "
            "first discovery not included.",
        )
        self._failovers = meter.create_counter(
            names.FAILOVERS,
            unit="{failover}",
            description="A host other than the last primary became primary (pool name: the new "
            "primary).",
        )
        self._split_brains = meter.create_counter(
            names.SPLIT_BRAIN_EPISODES,
            unit="{episode}",
            description="Times two or more hosts started claiming to be primary.",
        )

    # -- hooks ---------------------------------------------------------------------------------------

    @hookimpl
    def hasql_manager_started(self, manager: Any) -> None:
        """Start reporting ``manager``, and have it count its acquire stats."""
        manager.enable_acquire_stats()
        watched = _Watched(manager, asyncio.get_running_loop())
        watched.last_writer = _writer(manager.host_states())
        key = id(manager)
        with self._lock:
            self._watched[key] = watched
        weakref.finalize(manager, self._forget, key, watched)

    @hookimpl
    def hasql_manager_closed(self, manager: Any) -> None:
        """Stop reporting ``manager``, after recording its last histogram counts."""
        watched = self._forget(id(manager), None)
        if watched is not None:
            with watched.lock:
                self._record_histograms(watched, _take_snapshot(manager))

    @hookimpl
    def hasql_host_state_changed(self, manager: Any, old: HostState, new: HostState) -> None:
        """Count role changes and failovers (the host taking writes changed); notice the end of a
        split brain."""
        watched = self._watched.get(id(manager))
        if watched is None or new.name not in watched.index:
            return
        index = watched.index[new.name]
        if old.role is not new.role and old.role is not Role.UNKNOWN:
            self._role_changes.add(
                1,
                {
                    names.POOL_NAME: watched.pool_names[index],
                    names.HOST_ROLE: new.role.value,
                    names.PREVIOUS_ROLE: old.role.value,
                },
            )
        states = manager.host_states()
        writer = _writer(states)
        if writer is not None and writer != watched.last_writer:
            if watched.last_writer is not None and writer in watched.index:
                pool = watched.pool_names[watched.index[writer]]
                self._failovers.add(1, {**watched.cluster, names.POOL_NAME: pool})
            watched.last_writer = writer
        if watched.split_brain:
            watched.split_brain = sum(1 for s in states if s.role is Role.PRIMARY) > 1

    @hookimpl
    def hasql_split_brain(
        self, manager: Any, primaries: Sequence[HostState], writable: HostState | None
    ) -> None:
        """Count the start of a split-brain episode (not each change of the primaries' set)."""
        watched = self._watched.get(id(manager))
        if watched is not None and not watched.split_brain:
            watched.split_brain = True
            self._split_brains.add(1, watched.cluster)

    # -- collection ----------------------------------------------------------------------------------

    def _forget(self, key: int, expected: _Watched | None) -> _Watched | None:
        with self._lock:
            watched = self._watched.get(key)
            if watched is None or (expected is not None and watched is not expected):
                return None
            del self._watched[key]
            return watched

    def _read(self, watched: _Watched) -> _Snapshot | None:
        """A fresh snapshot of the manager, read in its loop thread; the previous one when the
        loop does not answer within ``read_timeout``; None when the manager is gone."""
        manager = watched.manager()
        if manager is None:
            return None
        if threading.get_ident() == watched.thread:
            return _take_snapshot(manager)
        future: concurrent.futures.Future[_Snapshot] = concurrent.futures.Future()

        def take() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(_take_snapshot(manager))
            except BaseException as error:
                future.set_exception(error)

        try:
            watched.loop.call_soon_threadsafe(take)
        except RuntimeError:  # the loop is closed: the manager will never change again
            return watched.snapshot
        try:
            return future.result(self._read_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            return watched.snapshot

    def _refresh(self) -> None:
        """Take every watched manager's snapshot for this collection; record histogram counts."""
        with self._lock:
            watched_now = list(self._watched.items())
        for key, watched in watched_now:
            with watched.lock:
                snapshot = self._read(watched)
                if snapshot is None:
                    self._forget(key, watched)
                    continue
                watched.snapshot = snapshot
                self._record_histograms(watched, snapshot)

    def _record_histograms(self, watched: _Watched, snapshot: _Snapshot) -> None:
        if snapshot.stats is None or self._wait_time is None or self._use_time is None:
            return
        for index, (host, stats) in enumerate(
            zip(snapshot.hosts, snapshot.stats.hosts, strict=True)
        ):
            attributes = watched.host_attributes(index, host.state.role)
            _record_new(self._wait_time, watched.wait_exported[index], stats.wait_time, attributes)
            _record_new(self._use_time, watched.use_exported[index], stats.use_time, attributes)

    def _snapshots(self) -> Iterator[tuple[_Watched, _Snapshot]]:
        with self._lock:
            watched_now = list(self._watched.values())
        for watched in watched_now:
            if watched.snapshot is not None:
                yield watched, watched.snapshot

    def _per_host(
        self, value: Callable[[HostMetrics, AcquireStats | None, int], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        """A callback observing ``value(host, acquire stats, index)`` for every host (skipping
        None), with the host's pool name and role."""

        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for watched, snapshot in self._snapshots():
                for index, host in enumerate(snapshot.hosts):
                    figure = value(host, snapshot.stats, index)
                    if figure is not None:
                        attributes = watched.host_attributes(index, host.state.role)
                        out.append(Observation(figure, attributes))
            return out

        return observe

    def _per_cluster(
        self, value: Callable[[_Snapshot], float | None]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            out = []
            for watched, snapshot in self._snapshots():
                figure = value(snapshot)
                if figure is not None:
                    out.append(Observation(figure, watched.cluster))
            return out

        return observe

    def _observe_connection_count(self, options: CallbackOptions) -> Iterable[Observation]:
        self._refresh()
        out = []
        for watched, snapshot in self._snapshots():
            for index, host in enumerate(snapshot.hosts):
                attributes = watched.host_attributes(index, host.state.role)
                out.append(
                    Observation(host.pool.idle, {**attributes, names.CONNECTION_STATE: "idle"})
                )
                out.append(
                    Observation(host.pool.in_use, {**attributes, names.CONNECTION_STATE: "used"})
                )
        return out

    def _observe_roles(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for watched, snapshot in self._snapshots():
            for index, host in enumerate(snapshot.hosts):
                for role in Role:
                    out.append(
                        Observation(
                            int(host.state.role is role), watched.host_attributes(index, role)
                        )
                    )
        return out

    def _observe_errors(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for watched, snapshot in self._snapshots():
            for index, host in enumerate(snapshot.hosts):
                attributes = watched.host_attributes(index, host.state.role)
                for kind, count in sorted(host.errors.items()):
                    out.append(Observation(count, {**attributes, names.ERROR_TYPE: kind}))
        return out

    def _observe_unserved(self, options: CallbackOptions) -> Iterable[Observation]:
        out = []
        for watched, snapshot in self._snapshots():
            if snapshot.stats is not None:
                for wanted, count in sorted(snapshot.stats.unserved_timeouts.items()):
                    out.append(Observation(count, {**watched.cluster, names.ACQUIRE_ROLE: wanted}))
        return out
