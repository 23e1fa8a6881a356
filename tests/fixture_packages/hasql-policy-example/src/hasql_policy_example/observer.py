"""An observer plugin that records events in a list."""

from hasql_core import hookimpl

EVENTS: list[tuple[str, str]] = []


@hookimpl
def hasql_host_state_changed(manager, old, new) -> None:
    EVENTS.append((new.name, new.role.value))
