"""Application-style load: a few writer and reader coroutines, each looping over operations.

Each worker is one coroutine doing, over and over::

    async with pm.acquire_master() as conn:          # or acquire_replica()
        row = await asyncio.wait_for(statement(conn), STATEMENT_BOUND)

and recording per operation when it started, got its connection, finished its statement and left
the block, how it ended, and which host served it. Loops are bounded in count and in time. A
watchdog scans the operations in flight and flags one that outlives its bound at once; at the end
a worker still stuck is cancelled and its operation recorded as ``stuck``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from typing import Any

from hasql_core import PoolManager

from . import settings as S
from .drivers import DriverSql

OK = "ok"
STUCK = "stuck"


@dataclasses.dataclass(slots=True)
class Op:
    """One operation. Times are ``time.monotonic()`` seconds; server times are epoch seconds."""

    kind: str
    worker: int
    start: float
    ident: int | None = None
    acquired: float | None = None
    statement_end: float | None = None
    end: float | None = None
    outcome: str = ""
    #: The node the connection led to (from the connection's peer port), when one was acquired.
    host: str | None = None
    #: The node that executed the statement (``inet_server_port()``).
    server_host: str | None = None
    #: Write: the row's insert time. Read: the commit time of the last replayed transaction.
    server_ts: float | None = None
    #: Read: the server's clock at the read; whether it was in recovery; its replay position.
    server_clock: float | None = None
    in_recovery: bool | None = None
    replay_lsn: str | None = None
    error: str | None = None
    #: Set by the watchdog as soon as the operation outlived :data:`OPERATION_BOUND`.
    overran: bool = False

    @property
    def ok(self) -> bool:
        """True when the operation completed without error."""
        return self.outcome == OK

    def duration(self, now: float | None = None) -> float:
        """Seconds from start to end (to ``now`` while it has not ended)."""
        end = self.end if self.end is not None else (now if now is not None else time.monotonic())
        return end - self.start

    def phases(self) -> dict[str, float | None]:
        """Seconds spent acquiring, in the statement and releasing (None: phase not reached)."""
        end = self.end
        # Never given a connection: the whole operation was the acquire.
        acquire_end = self.acquired if self.acquired is not None else end
        return {
            "acquire": None if acquire_end is None else acquire_end - self.start,
            "statement": (
                None
                if self.acquired is None or self.statement_end is None
                else self.statement_end - self.acquired
            ),
            "release": (
                None if self.statement_end is None or end is None else end - self.statement_end
            ),
        }


class HostNames:
    """Node names by port: the nodes' server ports (they can change on a restart) and proxy ports."""

    def __init__(self) -> None:
        self._names: dict[int, str] = {}

    def add(self, port: int, name: str) -> None:
        """Remember that ``port`` leads to node ``name``."""
        self._names[port] = name

    def name(self, port: Any) -> str | None:
        """The node behind ``port`` (``port:N`` when unknown, None for no port)."""
        if port is None:
            return None
        try:
            number = int(port)
        except (TypeError, ValueError):
            return f"port:{port}"
        return self._names.get(number, f"port:{number}")


def describe_error(error: BaseException) -> str:
    """``Type: message`` of ``error`` and of each exception it was raised from (for the secret scan
    and the report)."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(parts) < 5:
        seen.add(id(current))
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


class Workload:
    """The writers and readers of one run, their operations and the watchdog over them."""

    def __init__(
        self, pm: PoolManager, sql: DriverSql, names: HostNames, settings: S.Settings
    ) -> None:
        self.pm = pm
        self.sql = sql
        self.names = names
        self.settings = settings
        self.ops: list[Op] = []
        #: Operations the watchdog flagged as they outlived their bound, in order.
        self.overruns: list[Op] = []
        #: Workers that did not end within 2 s of being cancelled (named ``kind#index``).
        self.unstoppable: list[str] = []
        self._current: dict[str, Op] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._stopping = False
        self._hard_end = 0.0

    def start(self, longest: float) -> None:
        """Start every worker and the watchdog; no worker loops for more than ``longest`` s."""
        self._hard_end = time.monotonic() + longest
        for index in range(self.settings.writers):
            self._spawn("write", index)
        for index in range(self.settings.readers):
            self._spawn("read", index)
        self._watchdog = asyncio.ensure_future(self._watch())

    def _spawn(self, kind: str, index: int) -> None:
        key = f"{kind}#{index}"
        self._tasks[key] = asyncio.ensure_future(self._loop(key, kind, index))

    async def _loop(self, key: str, kind: str, index: int) -> None:
        for _ in range(self.settings.max_ops_per_worker):
            if self._stopping or time.monotonic() >= self._hard_end:
                return
            op = Op(kind=kind, worker=index, start=time.monotonic())
            self.ops.append(op)
            self._current[key] = op
            try:
                if kind == "write":
                    await self._write(op)
                else:
                    await self._read(op)
                op.outcome = OK
            except asyncio.CancelledError:
                op.end = time.monotonic()
                op.outcome = STUCK
                raise
            except Exception as error:
                op.outcome = type(error).__name__
                op.error = describe_error(error)
            op.end = time.monotonic()
            del self._current[key]
            await asyncio.sleep(self.settings.think)

    async def _write(self, op: Op) -> None:
        op.ident = ident = next(self._ids)
        async with self.pm.acquire_master() as conn:
            op.acquired = time.monotonic()
            op.host = self.names.name(self.sql.peer_port(conn))
            try:
                row = await asyncio.wait_for(
                    self.sql.write(conn, ident, op.worker), S.STATEMENT_BOUND
                )
            finally:
                op.statement_end = time.monotonic()
            op.server_host = self.names.name(row[0])
            op.server_ts = float(row[1])

    async def _read(self, op: Op) -> None:
        async with self.pm.acquire_replica() as conn:
            op.acquired = time.monotonic()
            op.host = self.names.name(self.sql.peer_port(conn))
            try:
                row = await asyncio.wait_for(self.sql.read(conn), S.STATEMENT_BOUND)
            finally:
                op.statement_end = time.monotonic()
            op.server_host = self.names.name(row[0])
            op.in_recovery = bool(row[1])
            op.server_clock = float(row[2])
            op.server_ts = None if row[3] is None else float(row[3])
            op.replay_lsn = None if row[4] is None else str(row[4])

    async def _watch(self) -> None:
        while True:
            now = time.monotonic()
            for op in list(self._current.values()):
                if not op.overran and op.end is None and now - op.start > S.OPERATION_BOUND:
                    op.overran = True
                    self.overruns.append(op)
            await asyncio.sleep(0.05)

    def in_flight(self) -> list[Op]:
        """Operations started and not ended yet."""
        return [op for op in self._current.values() if op.end is None]

    async def stop(self) -> None:
        """Stop the loops: let each finish its operation within its bound, then cancel the rest.

        Returns within about ``OPERATION_BOUND + 3`` seconds whatever the workers do.
        """
        self._stopping = True
        tasks = set(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=S.OPERATION_BOUND + 0.5)
            for task in pending:
                task.cancel()
            if pending:
                _, still = await asyncio.wait(pending, timeout=2.0)
                self.unstoppable = sorted(key for key, t in self._tasks.items() if t in still)
        now = time.monotonic()
        for op in self._current.values():
            if op.end is None:
                op.end, op.outcome = now, STUCK
            if not op.overran and now - op.start > S.OPERATION_BOUND:
                op.overran = True
                self.overruns.append(op)
        if self._watchdog is not None:
            self._watchdog.cancel()
            await asyncio.gather(self._watchdog, return_exceptions=True)
        for task in self._tasks.values():
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the loops catch everything but cancellation
