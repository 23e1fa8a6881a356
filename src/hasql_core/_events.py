"""Observer events: logged, then passed to the observers' pluggy hooks (never on the acquire path)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pluggy

from .host_state import HostState

log = logging.getLogger("hasql_core")


class Events:
    """Where the monitor and the manager report what happened to the cluster.

    One method per event of :mod:`hasql_core.hookspecs`. Each logs the event and calls the
    observers' hook with the manager; an observer that raises is logged and ignored, so a broken
    exporter never stops monitoring.
    """

    __slots__ = ("_manager", "_observers")

    def __init__(self, observers: pluggy.PluginManager | None) -> None:
        self._observers = observers
        self._manager: Any = None

    def bind(self, manager: Any) -> None:
        """Name the manager passed to every hook (set once the manager is built)."""
        self._manager = manager

    def manager_started(self) -> None:
        """The manager's monitor started (in the running event loop)."""
        self._call("hasql_manager_started")

    def manager_closed(self) -> None:
        """The manager's ``close()`` or ``terminate()`` finished."""
        self._call("hasql_manager_closed")

    def host_state_changed(self, old: HostState, new: HostState) -> None:
        """A host's role, availability, read-only flag, staleness or split-brain flag changed."""
        if log.isEnabledFor(logging.INFO):
            log.info("host %s: %s -> %s", new.name, old.describe(), new.describe())
        self._call("hasql_host_state_changed", old=old, new=new)

    def pool_created(self, host: HostState) -> None:
        """The pool of ``host`` was opened."""
        self._call("hasql_pool_created", host=host)

    def pool_closed(self, host: HostState) -> None:
        """The pool of ``host`` was closed or terminated."""
        self._call("hasql_pool_closed", host=host)

    def split_brain(self, primaries: Sequence[HostState], writable: HostState | None) -> None:
        """Two or more hosts claim to be primary; ``writable`` keeps the writes (None: nobody)."""
        log.warning(
            "split brain: %d hosts claim to be primary: %s",
            len(primaries),
            "; ".join(s.describe() for s in primaries),
        )
        self._call("hasql_split_brain", primaries=primaries, writable=writable)

    def _call(self, hook_name: str, **kwargs: Any) -> None:
        if self._observers is None:
            return
        try:
            getattr(self._observers.hook, hook_name)(manager=self._manager, **kwargs)
        except Exception:
            log.exception("a hasql observer failed on %s; ignoring it", hook_name)
