"""Operations started on a fixed schedule, each recorded with its timing, host and outcome.

A failover scenario starts one operation every ``interval`` seconds whatever happened to the
previous ones (as independent requests of an application would), so an operation stuck on a frozen
host does not stop the others. Each operation records when it started, when it was handed a
connection and to which server port, when it ended and how (``ok``, the exception's type name, or
``hung`` when it had not ended ``hung_after`` seconds after it started; a hung operation is
cancelled and left to end on its own).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

OK = "ok"
HUNG = "hung"
UNFINISHED = "unfinished"


@dataclasses.dataclass
class Op:
    """One operation. Times are ``loop.time()`` seconds (the monotonic clock)."""

    start: float
    acquired: float | None = None
    port: int | None = None
    end: float | None = None
    outcome: str = ""
    #: What a read returned (scenario 5: the age of the newest heartbeat the replica had).
    value: Any = None

    @property
    def ok(self) -> bool:
        """True when the operation completed without error."""
        return self.outcome == OK

    @property
    def ended(self) -> float:
        """When it ended (its start while it has not)."""
        return self.start if self.end is None else self.end

    @property
    def duration(self) -> float:
        """Seconds from start to end (to the hung mark for a hung operation)."""
        return self.ended - self.start


OpBody = Callable[[Op], Awaitable[None]]


class OpLog:
    """Starts operations on a schedule and keeps their records."""

    def __init__(self, hung_after: float) -> None:
        self.hung_after = hung_after
        self.ops: list[Op] = []
        self._running: set[asyncio.Task[None]] = set()
        self._leftovers: set[asyncio.Task[None]] = set()
        self._tickers: list[asyncio.Task[None]] = []

    def start_ticker(self, body: OpBody, interval: float) -> None:
        """Start one ``body(op)`` every ``interval`` seconds until :meth:`stop`."""
        self._tickers.append(asyncio.ensure_future(self._tick(body, interval)))

    async def _tick(self, body: OpBody, interval: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            task = asyncio.ensure_future(self._run(body))
            self._running.add(task)
            task.add_done_callback(self._running.discard)
            due += interval
            now = loop.time()
            if due < now - interval:  # fell behind (a busy loop): do not burst to catch up
                due = now
            await asyncio.sleep(max(due - now, 0.0))

    async def _run(self, body: OpBody) -> None:
        loop = asyncio.get_running_loop()
        op = Op(start=loop.time())
        self.ops.append(op)
        inner = asyncio.ensure_future(body(op))
        try:
            done, _ = await asyncio.wait({inner}, timeout=self.hung_after)
        except asyncio.CancelledError:
            op.end, op.outcome = loop.time(), UNFINISHED
            self._leave(inner)
            raise
        if not done:
            op.end, op.outcome = op.start + self.hung_after, HUNG
            self._leave(inner)
            return
        op.end = loop.time()
        error = inner.exception()
        op.outcome = OK if error is None else type(error).__name__

    def _leave(self, inner: asyncio.Task[None]) -> None:
        inner.cancel()
        self._leftovers.add(inner)
        inner.add_done_callback(_retrieve)

    async def stop(self) -> None:
        """Stop the schedules and wait until every started operation has ended or is hung.

        That takes at most ``hung_after`` seconds, so every operation gets an outcome.
        """
        for ticker in self._tickers:
            ticker.cancel()
        await asyncio.gather(*self._tickers, return_exceptions=True)
        if self._running:
            await asyncio.wait(set(self._running), timeout=self.hung_after + 1.0)
        for task in list(self._running):  # only if the loop was too busy to mark them in time
            task.cancel()

    async def abandon(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for cancelled hung operations to end."""
        for task in self._leftovers:
            task.cancel()
        pending = {task for task in self._leftovers if not task.done()}
        if pending:
            await asyncio.wait(pending, timeout=timeout)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
