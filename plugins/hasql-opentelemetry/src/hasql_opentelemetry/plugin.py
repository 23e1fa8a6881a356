"""The ``hasql`` entry point ``opentelemetry``: ``PoolManager(..., observers=["opentelemetry"])``.

Each hook hands the event to one :class:`~hasql_opentelemetry.OpenTelemetryObserver` on the global
meter provider (``opentelemetry.metrics.set_meter_provider``), made at the first event. Set the
provider before or after: instruments made on OpenTelemetry's global proxy move to the real provider
once it is set.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from hasql_core.hookspecs import hookimpl
from hasql_core.host_state import HostState

from .observer import OpenTelemetryObserver

_default: OpenTelemetryObserver | None = None
_default_lock = threading.Lock()


def default_observer() -> OpenTelemetryObserver:
    """The observer the ``opentelemetry`` entry point uses (one per process, global provider)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = OpenTelemetryObserver()
        return _default


@hookimpl
def hasql_manager_started(manager: Any) -> None:
    """See :meth:`OpenTelemetryObserver.hasql_manager_started`."""
    default_observer().hasql_manager_started(manager)


@hookimpl
def hasql_manager_closed(manager: Any) -> None:
    """See :meth:`OpenTelemetryObserver.hasql_manager_closed`."""
    default_observer().hasql_manager_closed(manager)


@hookimpl
def hasql_host_state_changed(manager: Any, old: HostState, new: HostState) -> None:
    """See :meth:`OpenTelemetryObserver.hasql_host_state_changed`."""
    default_observer().hasql_host_state_changed(manager, old, new)


@hookimpl
def hasql_split_brain(
    manager: Any, primaries: Sequence[HostState], writable: HostState | None
) -> None:
    """See :meth:`OpenTelemetryObserver.hasql_split_brain`."""
    default_observer().hasql_split_brain(manager, primaries, writable)
