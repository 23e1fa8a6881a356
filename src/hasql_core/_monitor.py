"""The topology monitor: one task per host, each probing its host on a dedicated connection.

Each task loops: make sure the monitor connection is open, run the probe, record the result, open the
host's pool after the first success, then sleep ``refresh_delay`` (or the short fast-probe delay while an
acquire waits for a role nobody has). Every connect, probe and pool opening is bounded by
``refresh_timeout``; a failure or a timeout marks the host unavailable at once and drops the monitor
connection, so a hung host is found within ``refresh_delay + refresh_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import Any, TypeVar

import attrs

from ._deadline import Alarm, TimerWheel, set_done, within
from ._events import Events
from ._probe import PROBE_QUERY, parse_probe_row, state_from_probe
from ._topology import HostEntry, Topology
from .driver import Driver
from .errors import ConfigurationError, PoolSetupError
from .host_state import HostState, Role

log = logging.getLogger("hasql_core._monitor")

T = TypeVar("T")

#: How long closing a monitor connection or terminating a half-open pool may take.
CLEANUP_TIMEOUT = 1.0
#: A probe slower than this many times the host's median probe time is suspicious...
SLOW_PROBE_FACTOR = 10.0
#: ...but never one faster than this (seconds): scheduling noise is not a fault.
SLOW_PROBE_FLOOR = 0.1
#: How much sooner than its predicted crossing a standby that stopped replaying is marked beyond
#: the lag limit, on top of one round trip: a read handed out just before the mark runs its
#: statement a little later, and the event loop may run the mark late when it is busy.
LAG_MARGIN = 0.01


#: Errors of opening a pool that waiting will not fix: the library refused its arguments.
_DETERMINISTIC_POOL_ERRORS = (TypeError, ConfigurationError)


@attrs.frozen
class MonitorSettings:
    """Timing of the monitor, in seconds."""

    refresh_delay: float
    refresh_timeout: float
    fast_delay: float


def describe_error(error: BaseException, secrets: tuple[str, ...]) -> str:
    """``Type: message`` of ``error`` with every secret replaced by ``***``."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


async def bounded(
    awaitable: Awaitable[T], timeout: float, what: str, wheel: TimerWheel | None = None
) -> T:
    """Await with a timeout (kept on ``wheel`` when given); on expiry raise ``TimeoutError`` saying
    what took too long."""
    try:
        return await within(awaitable, timeout, wheel)
    except asyncio.TimeoutError:
        raise asyncio.TimeoutError(f"{what} took longer than {timeout:g}s") from None


class HostMonitor:
    """Probes one host forever (until cancelled) and feeds the results to the topology."""

    def __init__(
        self,
        entry: HostEntry,
        driver: Driver[Any, Any, Any],
        topology: Topology,
        settings: MonitorSettings,
        pool_options: Mapping[str, Any],
        is_fast: Callable[[], bool],
        events: Events,
    ) -> None:
        self.entry = entry
        self._driver = driver
        self._topology = topology
        self._settings = settings
        self._pool_options = pool_options
        self._is_fast = is_fast
        self._events = events
        self._secrets = tuple(s for s in (entry.dsn.password,) if s)
        self._connection: Any = None
        self._wakeup: asyncio.Future[None] | None = None
        self._probe_again = False
        self._wheel = topology.wheel
        self._stale_timer: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._pool_error_logged: str | None = None

    def wake(self) -> None:
        """Probe as soon as possible: now if sleeping, again right after the probe in flight."""
        self._probe_again = True
        if self._wakeup is not None:
            set_done(self._wakeup)

    async def run(self) -> None:
        """Probe until cancelled; on cancellation close the monitor connection (bounded)."""
        try:
            while True:
                self._probe_again = False
                try:
                    await self.check_once()
                except Exception:  # a bug must not end monitoring of this host for good
                    log.exception("checking %s failed unexpectedly", self.entry.state.name)
                if not self._probe_again:
                    await self._sleep(self._next_delay())
        finally:
            if self._stale_timer is not None:
                self._stale_timer.cancel()
            for task in self._background:
                task.cancel()
            await self._drop_connection()

    async def check_once(self) -> None:
        """One probe (connecting first when needed); never raises except on cancellation."""
        entry, timeout = self.entry, self._settings.refresh_timeout
        begun = time.monotonic()
        try:
            if self._connection is None:
                self._connection = await bounded(
                    self._driver.connect_monitor(entry.dsn, timeout),
                    timeout,
                    "connecting",
                    self._wheel,
                )
            started = time.perf_counter()
            alarm = self._arm_slow_probe_alarm(begun)
            try:
                row = await bounded(
                    self._driver.probe(self._connection, PROBE_QUERY), timeout, "probe", self._wheel
                )
            finally:
                if alarm is not None:
                    alarm.cancel()
            rtt = time.perf_counter() - started
            result = parse_probe_row(row)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            await self._fail(error, begun)
        else:
            entry.record_rtt(rtt)
            state = state_from_probe(entry.state.host, entry.state.port, result, rtt)
            pool_opened = False
            if entry.pool is None:
                try:
                    await self._open_pool()
                    pool_opened = True
                except asyncio.CancelledError:
                    raise
                except Exception as error:  # it answers probes but takes no pool: not a candidate
                    message = describe_error(error, self._secrets)
                    entry.count_error("pool_open_error")
                    if message != self._pool_error_logged:  # once per change, not per probe
                        self._pool_error_logged = message
                        log.warning("could not open the pool for %s: %s", entry.state.name, message)
                    state = attrs.evolve(state, last_error=f"opening the pool: {message}")
            if (
                entry.pool is not None
                and not pool_opened
                and entry.state.role is Role.UNAVAILABLE
                and self._driver.replace_pool_after_outage
            ):
                await self._replace_pool()
            was_primary = entry.state.role is Role.PRIMARY
            # The replay age was measured at some point since the probe was sent: count it as
            # that much older, plus a margin (see _lag_margin).
            allowance = time.perf_counter() - started + self._lag_margin()
            self._topology.update(entry, state, begun, pool_opened, allowance)
            self._watch_lag(allowance)
            if was_primary and state.role is not Role.PRIMARY:
                self._expire_idle()
        entry.checks += 1
        self._topology.wake_waiters()

    def _next_delay(self) -> float:
        """Seconds until the next probe: ``refresh_delay``, the fast delay while an acquire waits,
        or sooner for a standby that is behind and could cross the lag limit before then."""
        settings = self._settings
        delay = settings.fast_delay if self._is_fast() else settings.refresh_delay
        crossing = self._seconds_to_lag_limit()
        if crossing is not None:
            # Look again a little before it could cross, so a healthy standby is re-measured
            # (and stays fresh) before the stale timer armed in _watch_lag fires: that timer's
            # margin, plus the probe's own round trip.
            margin = (
                settings.fast_delay + self._lag_margin() + 2 * (self.entry.response_time or 0.0)
            )
            delay = min(delay, max(crossing - margin, settings.fast_delay))
        return delay

    def _seconds_to_lag_limit(self) -> float | None:
        """For a fresh standby that is behind the primary: seconds until its replay age reaches
        the lag limit if it replays nothing more (its age grows one second per second)."""
        limit = self._topology.lag_limit.seconds
        state = self.entry.state
        if limit is None or state.role is not Role.STANDBY or not state.lag_bytes or state.stale:
            return None
        return max(limit - (state.lag_seconds or 0.0), 0.0)

    def _lag_margin(self) -> float:
        """How long before its predicted crossing a stalled standby is marked stale."""
        return LAG_MARGIN + (self.entry.response_time or 0.0)

    def _watch_lag(self, allowance: float) -> None:
        """Arm a timer that marks the standby stale when it could cross the lag limit, unless a
        probe before then shows it replayed more. Reads then never go to a replica older than the
        limit, whatever ``refresh_delay`` is. ``allowance``: seconds to count the measured
        replay age as older (the time since the probe was sent, and :meth:`_lag_margin`)."""
        if self._stale_timer is not None:
            self._stale_timer.cancel()
            self._stale_timer = None
        crossing = self._seconds_to_lag_limit()
        if crossing is not None:
            # A loop timer, not the wheel: it must not ring a tick late (lag limits are exact).
            self._stale_timer = self._wheel.loop.call_later(
                max(crossing - allowance, 0.0), self._topology.mark_stale, self.entry
            )

    def _arm_slow_probe_alarm(self, begun: float) -> Alarm | None:
        """Hold the host back from new acquires if this probe takes far longer than usual.

        A healthy host answers the probe in about its median round-trip time; a frozen or
        overloaded one does not answer at all. After ``SLOW_PROBE_FACTOR`` times the median (at
        least ``SLOW_PROBE_FLOOR``) the host is suspected: acquires then wait (probing the other
        hosts fast, so a promoted replica is found at once) until this probe answers, which clears
        the suspicion, or times out, which marks the host unavailable.
        """
        median = self.entry.response_time
        if median is None:
            return None
        after = max(SLOW_PROBE_FLOOR, SLOW_PROBE_FACTOR * median)
        if after >= self._settings.refresh_timeout:
            return None
        return self._wheel.call_later(after, partial(self._probe_is_slow, begun))

    def _probe_is_slow(self, begun: float) -> None:
        log.info(
            "probe of %s is slow; holding the host back until it answers", self.entry.state.name
        )
        self._topology.suspect(self.entry, since=begun)

    async def _fail(self, error: BaseException, begun: float) -> None:
        entry = self.entry
        message = describe_error(error, self._secrets)
        kind = "probe_timeout" if isinstance(error, asyncio.TimeoutError) else "probe_error"
        entry.count_error(kind)
        if entry.state.available:
            log.warning("host %s is unavailable: %s", entry.state.name, message)
        await self._drop_connection()
        was_primary = entry.state.role is Role.PRIMARY
        self._topology.update(
            entry,
            HostState(
                host=entry.state.host,
                port=entry.state.port,
                role=Role.UNAVAILABLE,
                checked_at=time.time(),
                last_error=message,
                timeline=entry.state.timeline,
            ),
            begun,
        )
        if was_primary:
            self._expire_idle()

    async def _open_pool(self) -> None:
        entry = self.entry
        try:
            pool = self._driver.create_pool(entry.dsn, self._pool_options)
        except Exception as error:
            # create_pool does no I/O, so its failure is a deterministic one: a bad option or DSN.
            self._give_up_on_pool(error)
            raise
        try:
            await bounded(
                self._driver.open_pool(pool),
                self._settings.refresh_timeout,
                "opening the pool",
                self._wheel,
            )
        except BaseException as error:
            with contextlib.suppress(Exception):
                await within(self._driver.terminate_pool(pool), CLEANUP_TIMEOUT)
            if isinstance(error, _DETERMINISTIC_POOL_ERRORS):
                self._give_up_on_pool(error)
            raise
        entry.capacity = self._driver.pool_stats(pool).max
        entry.pool = pool
        self._pool_error_logged = None
        log.info("opened pool for %s", entry.state.name)
        self._events.pool_created(entry.state)

    async def _replace_pool(self) -> None:
        """The host is back after an outage: open a new pool and retire the old one in the
        background (see ``Driver.replace_pool_after_outage``). On failure the old pool stays."""
        entry = self.entry
        old = entry.pool
        entry.pool = None
        try:
            await self._open_pool()
        except asyncio.CancelledError:
            entry.pool = old
            raise
        except Exception as error:
            entry.pool = old
            log.info(
                "could not replace the pool of %s after an outage (%s); keeping the old one",
                entry.state.name,
                describe_error(error, self._secrets),
            )
            return
        log.info("replaced the pool of %s after an outage", entry.state.name)
        task = asyncio.ensure_future(within(self._driver.terminate_pool(old), CLEANUP_TIMEOUT * 5))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)

    def _give_up_on_pool(self, error: Exception) -> None:
        """Tell waiting acquires and ``ready()`` that this host's pool can never be made."""
        message = describe_error(error, self._secrets)
        failure = PoolSetupError(
            f"the {self._driver.name} driver cannot make a pool for {self.entry.state.name}: "
            f"{message}. Check pool_factory_kwargs (they go to the driver's pool factory "
            "unchanged) and the DSN."
        )
        failure.__cause__ = error
        self._topology.fail_setup(failure)

    def _expire_idle(self) -> None:
        """The host stopped being primary: its idle connections must not be handed out for writes."""
        if self.entry.pool is not None:
            log.warning(
                "host %s is no longer primary; expiring its idle connections", self.entry.state.name
            )
            task = asyncio.ensure_future(self._driver.expire_idle(self.entry.pool))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            task.add_done_callback(_log_failure)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await within(self._driver.close_monitor(connection), CLEANUP_TIMEOUT)

    async def _sleep(self, delay: float) -> None:
        wakeup: asyncio.Future[None] = self._wheel.loop.create_future()
        self._wakeup = wakeup
        timer = self._wheel.call_later(delay, partial(set_done, wakeup))
        try:
            await wakeup
        finally:
            timer.cancel()
            self._wakeup = None


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("a background pool task failed: %r", task.exception())
