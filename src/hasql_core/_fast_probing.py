"""Fast probing while acquires wait: as long as an acquire (or a causal read) waits for a host that
can serve it, every monitor probes at the fast delay, so a promoted standby is found at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._monitor import HostMonitor


class FastProbing:
    """The count of waiting acquires, shared by a manager and its monitors.

    A waiter calls :meth:`enter` when it starts waiting and :meth:`leave` when it stops, whatever
    the outcome; the first one wakes every monitor, and the monitors ask :meth:`wanted` before
    each sleep.
    """

    __slots__ = ("monitors", "waiters")

    def __init__(self) -> None:
        #: Acquires waiting now.
        self.waiters = 0
        #: The monitors woken by the first waiter (set once the manager has built them).
        self.monitors: Sequence[HostMonitor] = ()

    def wanted(self) -> bool:
        """Whether the monitors probe at the fast delay now."""
        return self.waiters > 0

    def enter(self) -> None:
        """One more waiter; the first one has every host probed now."""
        self.waiters += 1
        if self.waiters == 1:
            for monitor in self.monitors:
                monitor.wake()

    def leave(self) -> None:
        """One waiter less (served, failed or cancelled)."""
        self.waiters -= 1
