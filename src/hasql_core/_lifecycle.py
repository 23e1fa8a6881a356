"""Stopping what a PoolManager started, each step bounded: its monitor tasks, the wait for
handed-out connections, its pools."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from ._deadline import within
from ._events import Events
from ._handout import Handout
from ._monitor import CLEANUP_TIMEOUT
from ._topology import HostEntry, Topology
from .driver import Driver

log = logging.getLogger("hasql_core")


def log_crash(task: asyncio.Task[None]) -> None:
    """Done callback of a monitor task: log the exception it stopped with, if any."""
    if not task.cancelled() and task.exception() is not None:
        log.error("a host monitor stopped unexpectedly", exc_info=task.exception())


async def stop_monitors(tasks: Sequence[asyncio.Task[None]], topology: Topology) -> None:
    """Cancel the monitor ``tasks`` and wait for them (bounded), then wake every acquire waiting
    on ``topology`` so that it sees the manager closing."""
    pending = [task for task in tasks if not task.done()]
    for _ in range(3):  # a task busy in cleanup may need a second nudge; never wait unbounded
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, still = await asyncio.wait(pending, timeout=CLEANUP_TIMEOUT * 2)
        pending = list(still)
    if pending:
        log.warning("%d host monitor task(s) did not stop when cancelled", len(pending))
    topology.wake_waiters()


async def wait_for_returns(handout: Handout, limit: float) -> None:
    """Wait up to ``limit`` seconds for every handed-out connection to come back; warn when some
    are still out then."""
    if not handout:
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await within(handout.watch_returns().wait(), limit)
    if handout:
        log.warning(
            "closing with %d connection(s) still handed out after %gs; terminating them",
            len(handout),
            limit,
        )


async def close_pools(
    entries: Sequence[HostEntry],
    driver: Driver[Any, Any, Any],
    events: Events,
    graceful: bool,
    limit: float,
) -> None:
    """Close the pool of every host at once: gracefully (within ``limit``, at least the cleanup
    bound) when ``graceful`` and the host answers, otherwise, or when that fails, terminated."""
    await asyncio.gather(*(_close_pool(e, driver, events, graceful, limit) for e in entries))


async def _close_pool(
    entry: HostEntry,
    driver: Driver[Any, Any, Any],
    events: Events,
    graceful: bool,
    limit: float,
) -> None:
    pool, entry.pool = entry.pool, None
    if pool is None:
        return
    # A graceful close talks to the server; one that stopped answering (or is held back) would
    # keep close() waiting for nothing, so its pool is terminated instead.
    graceful = graceful and entry.state.available and entry.suspect is None
    try:
        if graceful:
            await within(driver.close_pool(pool), max(limit, CLEANUP_TIMEOUT))
        else:
            await within(driver.terminate_pool(pool), CLEANUP_TIMEOUT * 5)
    except Exception as error:
        log.warning(
            "closing the pool of %s failed (%r); terminating it",
            entry.state.name,
            type(error).__name__,
        )
        with contextlib.suppress(Exception):
            await within(driver.terminate_pool(pool), CLEANUP_TIMEOUT * 5)
    events.pool_closed(entry.state)
