"""Finding drivers, balancer policies and observers through pluggy and the ``hasql`` entry points.

Names are resolved once, when a :class:`~hasql_core.PoolManager` is built. Resolution loads the entry
point whose name is the requested name first and loads every entry point only when that does not find
it (or to list what is installed). Nothing here runs on the acquire path.

A plugin distribution declares, for each name it provides, an entry point of that name::

    [project.entry-points.hasql]
    asyncpg = "hasql_asyncpg.plugin"
    asyncpgsa = "hasql_asyncpg.plugin"
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

import attrs
import pluggy

from . import hookspecs, policies
from .balancer import BalancerPolicy
from .driver import Driver
from .errors import (
    ConfigurationError,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    UnknownPluginError,
)

ENTRY_POINT_GROUP = "hasql"
BUILTIN_SOURCE = "hasql-core (built in)"

log = logging.getLogger("hasql_core")

T = TypeVar("T")


@attrs.frozen
class Provided:
    """One class offered by one plugin, and where it came from (a distribution, for messages)."""

    name: str
    cls: type[Any]
    source: str


def new_plugin_manager() -> pluggy.PluginManager:
    """A pluggy manager that knows the ``hasql`` hookspecs and nothing else."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _dist_label(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    if dist is None:
        return f"entry point {ep.name!r}"
    return f"{dist.metadata['Name']} {dist.version}"


def _dist_name(ep: importlib.metadata.EntryPoint) -> str:
    dist = ep.dist
    return dist.metadata["Name"] if dist is not None else ep.value.split(".")[0]


def _entry_points(name: str | None = None) -> list[importlib.metadata.EntryPoint]:
    eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
    found = [ep for ep in eps if name is None or ep.name == name]
    unique: dict[tuple[str, str], importlib.metadata.EntryPoint] = {}
    for ep in found:  # the same distribution can be seen twice on sys.path; count it once
        unique.setdefault((ep.name, _dist_name(ep)), ep)
    return list(unique.values())


def load_entry_point(ep: importlib.metadata.EntryPoint) -> Any:
    """Import one entry point's object; failure raises :class:`PluginLoadError` naming its source."""
    try:
        return ep.load()
    except Exception as exc:
        dist = _dist_name(ep)
        raise PluginLoadError(
            f"the hasql plugin {ep.name!r} ({ep.value}) from {_dist_label(ep)} failed to import: "
            f"{type(exc).__name__}: {exc}. Reinstall or upgrade it (pip install -U {dist}) "
            f"or uninstall it (pip uninstall {dist})."
        ) from exc


def register_plugin(manager: pluggy.PluginManager, plugin: object, label: str) -> None:
    """Register ``plugin`` after checking that every hook it implements fits a hookspec.

    A plugin object with a misspelt hook name or wrong arguments raises :class:`PluginError`.
    """
    if manager.is_registered(plugin):
        return
    try:
        manager.register(plugin, name=f"{label}:{id(plugin)}")
        manager.check_pending()
    except (pluggy.PluginValidationError, ValueError) as exc:
        if manager.is_registered(plugin):
            manager.unregister(plugin)
        raise PluginError(
            f"the hasql plugin {label} does not fit the hookspecs: {exc}. Its hooks must be named "
            "and take arguments as in hasql_core.hookspecs."
        ) from exc
    for hook_caller in manager.get_hookcallers(plugin) or ():
        for impl in hook_caller.get_hookimpls():
            if impl.plugin is plugin and inspect.iscoroutinefunction(impl.function):
                manager.unregister(plugin)
                raise PluginError(
                    f"the hook {hook_caller.name} of the hasql plugin {label} is an async def: "
                    "hasql calls hooks synchronously, so it would never run. Make it a plain "
                    "def (schedule your own task from it if it must await)."
                )


def implements_any_hook(manager: pluggy.PluginManager, plugin: object) -> bool:
    """Whether ``plugin`` (registered in ``manager``) implements at least one hasql hook."""
    return bool(manager.get_hookcallers(plugin))


def _provided_by(
    plugin: object, label: str, call: Callable[[pluggy.PluginManager], list[Sequence[type[Any]]]]
) -> list[Provided]:
    manager = new_plugin_manager()
    register_plugin(manager, plugin, label)
    provided = []
    for result in call(manager):
        for cls in result:
            base = _BASE_OF_CALL.get(call)
            if base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(
                    f"the hasql plugin {label} returned {cls!r} from its hook, which is not a "
                    f"subclass of {base.__module__}.{base.__qualname__}; return the classes "
                    "themselves, subclassing that base."
                )
            provided.append(Provided(getattr(cls, "name", cls.__name__), cls, label))
    return provided


def _drivers_of(manager: pluggy.PluginManager) -> list[Sequence[type[Any]]]:
    return list(manager.hook.hasql_drivers())


def _policies_of(manager: pluggy.PluginManager) -> list[Sequence[type[Any]]]:
    return list(manager.hook.hasql_balancer_policies())


@attrs.frozen
class _Kind:
    noun: str
    call: Callable[[pluggy.PluginManager], list[Sequence[type[Any]]]]
    builtins: tuple[ModuleType, ...]
    base: type[Any]


DRIVERS = _Kind("driver", _drivers_of, (), Driver)
POLICIES = _Kind("balancer policy", _policies_of, (policies,), BalancerPolicy)
_BASE_OF_CALL: dict[Callable[..., Any], type[Any]] = {
    _drivers_of: Driver,
    _policies_of: BalancerPolicy,
}

#: Where the drivers of the project's own plugins come from, for install hints.
KNOWN_DISTRIBUTIONS = {
    "asyncpg": "hasql-asyncpg",
    "asyncpgsa": "'hasql-asyncpg[asyncpgsa]'",
    "psycopg3": "'hasql-psycopg3[binary]'",
    "psycopg": "'hasql-psycopg3[binary]'",
    "aiopg": "hasql-aiopg",
    "aiopg_sa": "'hasql-aiopg[sa]'",
    "asyncsqlalchemy": "hasql-sqlalchemy",
    "sqlalchemy": "hasql-sqlalchemy",
    "opentelemetry": "hasql-opentelemetry",
}


def _pick(kind: _Kind, name: str, provided: Iterable[Provided]) -> Provided | None:
    matches: dict[type[Any], Provided] = {}
    for item in provided:
        if item.name == name:
            matches.setdefault(item.cls, item)
    if len(matches) > 1:
        sources = " and ".join(sorted({m.source for m in matches.values()}))
        raise PluginConflictError(
            f"the {kind.noun} name {name!r} is claimed by more than one plugin ({sources}); "
            "uninstall one of them."
        )
    return next(iter(matches.values()), None)


def _scan_all(kind: _Kind) -> tuple[list[Provided], list[PluginError]]:
    provided: list[Provided] = []
    for module in kind.builtins:
        provided += _provided_by(module, BUILTIN_SOURCE, kind.call)
    errors: list[PluginError] = []
    for ep in _entry_points():
        try:
            provided += _provided_by(load_entry_point(ep), _dist_label(ep), kind.call)
        except PluginError as exc:  # one broken plugin must not hide every other name
            errors.append(exc)
    return provided, errors


def available_names(kind: _Kind) -> dict[str, str]:
    """Every name of this kind that the installed plugins provide, mapped to its source."""
    provided, _ = _scan_all(kind)
    return {item.name: item.source for item in provided}


def resolve(kind: _Kind, name: str) -> type[Any]:
    """Return the class registered under ``name`` for ``kind`` (driver or balancer policy).

    Raises :class:`UnknownPluginError` (naming what is installed and what to install),
    :class:`PluginLoadError` or :class:`PluginConflictError`.
    """
    named = _entry_points(name)
    for module in kind.builtins:
        found = _pick(kind, name, _provided_by(module, BUILTIN_SOURCE, kind.call))
        if found is not None:
            if named:
                raise PluginConflictError(
                    f"{_dist_label(named[0])} declares an entry point named {name!r}, the name "
                    f"of a built-in {kind.noun}; it would never be used. Rename it in that "
                    "distribution's entry points."
                )
            return found.cls
    if len(named) > 1:
        sources = " and ".join(sorted(_dist_label(ep) for ep in named))
        raise PluginConflictError(
            f"the {kind.noun} name {name!r} is claimed by more than one plugin ({sources}); "
            "uninstall one of them."
        )
    if named:
        plugin = load_entry_point(named[0])
        label = _dist_label(named[0])
        probe = new_plugin_manager()
        register_plugin(probe, plugin, label)
        if not implements_any_hook(probe, plugin):
            raise PluginError(
                f"the entry point {name!r} ({named[0].value}) of {label} implements no hasql "
                "hook: decorate its hook functions with @hasql_core.hookimpl (for a "
                f"{kind.noun}: {kind.call.__name__.strip('_').replace('_of', '')} -> "
                f"hasql_{'drivers' if kind is DRIVERS else 'balancer_policies'})."
            )
        found = _pick(kind, name, _provided_by(plugin, label, kind.call))
        if found is not None:
            return found.cls
    provided, errors = _scan_all(kind)
    found = _pick(kind, name, provided)
    if found is not None:
        return found.cls
    installed = sorted({item.name for item in provided})
    message = (
        f"no installed plugin provides the {kind.noun} {name!r}. "
        f"Installed: {', '.join(installed) if installed else 'none'}."
    )
    known = KNOWN_DISTRIBUTIONS.get(name) if kind is DRIVERS else None
    if known is not None:
        message += f" Install the plugin that provides it: pip install {known}."
    else:
        close = difflib.get_close_matches(
            name, sorted({*installed, *(KNOWN_DISTRIBUTIONS if kind is DRIVERS else ())}), n=3
        )
        if close:
            message += f" Did you mean {' or '.join(repr(c) for c in close)}?"
    if errors:
        message += " Plugins that failed to import: " + "; ".join(str(e) for e in errors)
    raise UnknownPluginError(message)


def _instantiate(kind: _Kind, value: Any, make: Callable[[type[Any]], T]) -> T:
    if isinstance(value, str):
        return make(resolve(kind, value))
    if isinstance(value, type):
        if not issubclass(value, kind.base):
            raise PluginError(
                f"{value.__qualname__} is not a {kind.noun}: pass a name, a subclass of "
                f"{kind.base.__module__}.{kind.base.__qualname__} or an instance of one."
            )
        return make(value)
    if isinstance(value, kind.base):
        return value  # type: ignore[no-any-return]
    raise PluginError(
        f"expected a {kind.noun} name, class or instance, got {type(value).__name__}: {value!r}"
    )


def make_driver(
    value: str | type[Driver[Any, Any, Any]] | Driver[Any, Any, Any],
) -> Driver[Any, Any, Any]:
    """A driver instance from a name, a :class:`Driver` subclass or an instance (used as is)."""
    driver: Driver[Any, Any, Any] = _instantiate(DRIVERS, value, lambda cls: cls())
    return driver


def make_policy(
    value: str | type[BalancerPolicy] | BalancerPolicy,
    options: Mapping[str, Any] | None = None,
) -> BalancerPolicy:
    """A balancer policy instance from a name, a :class:`BalancerPolicy` subclass or an instance.

    ``options`` are the keyword arguments its class is constructed with (``balancer_policy_options``);
    they cannot go with an instance. A class that refuses them raises
    :class:`~hasql_core.errors.ConfigurationError` naming the policy and the options.
    """
    if options and isinstance(value, BalancerPolicy):
        raise ConfigurationError(
            "balancer_policy_options cannot be used with a policy instance: configure the "
            "instance yourself, or pass the policy's name or class with the options"
        )

    def construct(cls: type[BalancerPolicy]) -> BalancerPolicy:
        try:
            return cls(**(options or {}))
        except TypeError as error:
            raise ConfigurationError(
                f"the balancer policy {cls.name!r} ({cls.__module__}.{cls.__qualname__}) does "
                f"not accept the options {sorted(options or {})}: {error}"
            ) from error

    policy: BalancerPolicy = _instantiate(POLICIES, value, construct)
    return policy


def make_observer_manager(observers: Sequence[object | str]) -> pluggy.PluginManager | None:
    """A pluggy manager holding the given observers (objects, or entry-point names to load).

    Returns ``None`` when there are no observers, so the monitor can skip event calls entirely.
    """
    if not observers:
        return None
    manager = new_plugin_manager()
    for observer in observers:
        if isinstance(observer, str):
            eps = _entry_points(observer)
            if not eps:
                raise UnknownPluginError(
                    f"no installed plugin has an entry point named {observer!r} in the "
                    f"{ENTRY_POINT_GROUP!r} group; pass the observer object itself or install it."
                )
            register_plugin(manager, load_entry_point(eps[0]), _dist_label(eps[0]))
        else:
            register_plugin(manager, observer, type(observer).__name__)
    return manager
