"""``hasql status``: probe every host of a DSN once and say whether there is one writable primary."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import attrs

from .._probe import PROBE_QUERY, ProbeResult, parse_probe_row, state_from_probe
from .._topology import timeline_winner, with_standby_lag
from ..driver import Driver
from ..dsn import Dsn, split_dsn
from ..host_state import HostState, Role
from ._common import (
    EXIT_FAILED,
    EXIT_OK,
    load_driver,
    parse_cli_dsn,
    redact,
    run_async,
    stderr_console,
    stdout_console,
)
from ._render import hosts_table, state_to_json

#: How long closing a probe connection may take.
_CLOSE_TIMEOUT = 1.0


def _error_text(error: BaseException, secrets: Sequence[str | None]) -> str:
    if isinstance(error, asyncio.TimeoutError) and not str(error):
        return "TimeoutError: no answer in time"
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return redact(text, secrets)


async def probe_host(
    driver: Driver[Any, Any, Any], dsn: Dsn, timeout: float
) -> tuple[HostState, ProbeResult | None]:
    """Connect to the single host of ``dsn`` and run the probe, all within ``timeout`` seconds.

    Returns the host's state (lag not yet computed: see :func:`with_lag`) and the raw probe result,
    or an unavailable state with the redacted error and ``None``.
    """
    secrets = (dsn.password,)
    base = HostState(host=dsn.host, port=dsn.port)
    connection: Any = None
    rtt = 0.0

    async def connect_and_probe() -> Sequence[Any]:
        nonlocal connection, rtt
        connection = await driver.connect_monitor(dsn, timeout)
        started = time.perf_counter()
        row = await driver.probe(connection, PROBE_QUERY)
        rtt = time.perf_counter() - started
        return row

    try:
        row = await asyncio.wait_for(connect_and_probe(), timeout)
        result = parse_probe_row(row)
    except asyncio.CancelledError:
        raise
    except Exception as error:
        state = attrs.evolve(
            base,
            role=Role.UNAVAILABLE,
            checked_at=time.time(),
            last_error=_error_text(error, secrets),
        )
        return state, None
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(driver.close_monitor(connection), _CLOSE_TIMEOUT)
    return state_from_probe(dsn.host, dsn.port, result, rtt), result


def with_lag(states: Sequence[HostState]) -> list[HostState]:
    """Fill in lag and split-brain flags the way the monitor does.

    The primary is the one on the highest timeline (none if two tie). Standby lag in bytes is the
    primary's WAL position (or the standby's own received position, if further ahead) minus its replay
    position, never below 0; in seconds it is 0 when caught up, else the age of the last replayed
    transaction.
    """
    primaries = [s for s in states if s.role is Role.PRIMARY]
    index = timeline_winner([s.timeline for s in primaries])
    winner = None if index is None else primaries[index]
    primary_lsn = winner.wal_lsn if winner is not None else None
    result = []
    for state in states:
        if state.role is Role.PRIMARY:
            state = attrs.evolve(state, split_brain=len(primaries) > 1 and state is not winner)
        elif state.role is Role.STANDBY:
            state = with_standby_lag(state, primary_lsn)
        result.append(state)
    return result


async def probe_all(dsn: Dsn, driver: Driver[Any, Any, Any], timeout: float) -> list[HostState]:
    """Probe every host of ``dsn`` concurrently, each bounded by ``timeout``; lag filled in."""
    results = await asyncio.gather(*(probe_host(driver, one, timeout) for one in split_dsn(dsn)))
    return with_lag([state for state, _ in results])


def verdict(states: Sequence[HostState]) -> str | None:
    """Why the cluster has no single writable primary, or ``None`` when it has exactly one."""
    primaries = [s for s in states if s.role is Role.PRIMARY]
    if not primaries:
        down = sum(1 for s in states if not s.available)
        return f"no primary found ({len(states)} hosts, {down} unavailable)"
    if len(primaries) > 1:
        names = ", ".join(s.describe() for s in primaries)
        return f"split brain: {len(primaries)} hosts claim to be primary: {names}"
    if primaries[0].read_only:
        return f"the only primary {primaries[0].name} is read-only (transaction_read_only=on)"
    return None


def run(dsn_text: str, driver_name: str, as_json: bool, timeout: float) -> int:
    """The ``status`` command; returns the exit code."""
    dsn = parse_cli_dsn(dsn_text)
    driver = load_driver(driver_name)
    states = run_async(lambda: probe_all(dsn, driver, timeout))
    if as_json:
        json.dump([state_to_json(s) for s in states], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        stdout_console().print(hosts_table(states, title=f"hasql status {dsn.redacted()}"))
    problem = verdict(states)
    if problem is not None:
        stderr_console().print(f"hasql status: {problem}", markup=False)
        return EXIT_FAILED
    return EXIT_OK
