"""The hooks a ``hasql`` plugin can implement.

A plugin is a module (or object) found through the ``hasql`` entry-point group, or passed to
``PoolManager(observers=[...])``, whose functions are marked with :data:`hookimpl`::

    from hasql_core import hookimpl

    @hookimpl
    def hasql_drivers():
        return [MyDriver]

Provider hooks (drivers, policies) run once, when a manager resolves a name. Event hooks run in the
monitor when something changes, never on the acquire path; an exception raised by an event hook is
logged and otherwise ignored, so a broken observer cannot stop routing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .balancer import BalancerPolicy
    from .driver import Driver
    from .host_state import HostState

PROJECT = "hasql"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hasql_drivers() -> Sequence[type[Driver[Any, Any, Any]]]:
    """Return the driver classes this plugin provides.

    Results of all plugins are concatenated. Each class's ``name`` must be unique among installed
    plugins; two plugins claiming one name make resolving that name fail with both named.
    """
    raise NotImplementedError


@hookspec
def hasql_balancer_policies() -> Sequence[type[BalancerPolicy]]:
    """Return the balancer policy classes this plugin provides.

    Results of all plugins are concatenated; names must be unique, as for drivers. The built-in
    policies are provided through this same hook.
    """
    raise NotImplementedError


@hookspec
def hasql_manager_started(manager: Any) -> None:
    """Called once per manager, inside its event loop, when its monitor starts (when the manager is
    created inside a running loop, else at its first use).

    ``manager`` is the :class:`~hasql_core.PoolManager`. An exporter registers the manager here:
    it may call ``manager.enable_acquire_stats()`` to have acquire figures counted from now on, and
    keep the running loop to read the manager's state from it. Return values are ignored.
    """


@hookspec
def hasql_manager_closed(manager: Any) -> None:
    """Called when ``close()`` or ``terminate()`` of ``manager`` has finished (every pool closed).

    An exporter stops reporting the manager here. It may be called twice for one manager (a
    ``terminate()`` during a ``close()``), and for a manager that never started. Return values are
    ignored.
    """


@hookspec
def hasql_host_state_changed(manager: Any, old: HostState, new: HostState) -> None:
    """Called when a host's role, availability, read-only flag, staleness or split-brain flag changed.

    ``manager`` is the :class:`~hasql_core.PoolManager`. Called once per change, for every observer;
    return values are ignored.
    """


@hookspec
def hasql_pool_created(manager: Any, host: HostState) -> None:
    """Called after the pool for ``host`` was opened. Return values are ignored."""


@hookspec
def hasql_pool_closed(manager: Any, host: HostState) -> None:
    """Called after the pool for ``host`` was closed or terminated. Return values are ignored."""


@hookspec
def hasql_split_brain(
    manager: Any, primaries: Sequence[HostState], writable: HostState | None
) -> None:
    """Called when two or more hosts claim to be primary (and again whenever that set changes).

    ``writable`` is the primary on the highest timeline, which keeps the writes, or ``None`` when the
    highest timeline is shared and writes are refused. Return values are ignored.
    """
