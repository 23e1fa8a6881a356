"""Resolving drivers, policies and observers through pluggy and the ``hasql`` entry points.

The fixture distribution ``hasql-policy-example`` (tests/fixture_packages) is installed into the
core test environment, exactly as a user would install a third-party plugin.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Sequence

import pytest

from hasql_core import (
    BalancerPolicy,
    Candidate,
    PluginConflictError,
    PluginError,
    PluginLoadError,
    PoolManager,
    UnknownPluginError,
    hookimpl,
    policies,
)
from hasql_core import _plugins as plugins
from hasql_core.policies import GreedyPolicy, RoundRobinPolicy
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

from .conftest import FAST, wait_for


def test_fixture_plugin_is_installed():
    names = {ep.name for ep in importlib.metadata.entry_points(group="hasql")}
    assert {"first_host", "broken_example", "example_observer"} <= names


def test_builtin_policies_resolve_by_name():
    assert plugins.make_policy("greedy").__class__ is GreedyPolicy
    assert plugins.make_policy("round_robin").__class__ is RoundRobinPolicy
    assert {"greedy", "round_robin", "random_weighted", "first_host"} <= set(
        plugins.available_names(plugins.POLICIES)
    )


async def test_pip_installed_policy_gets_its_options_and_sees_reads_and_writes():
    cluster = FakeCluster(3)
    pm = PoolManager(
        cluster.dsn,
        driver=FakeDriver(cluster),
        balancer_policy="first_host",
        balancer_policy_options={"last": True},
        **FAST,
    )
    try:
        await pm.ready(masters_count=1, replicas_count=2, timeout=5)
        async with pm.acquire_replica() as conn:
            assert await conn.execute("SELECT 1") == "db2:5432"
        async with pm.acquire_master() as conn:
            assert await conn.execute("INSERT 1") == "db0:5432"
        assert pm.balancer.decisions == [(True, "db2"), (False, "db0")]  # type: ignore[attr-defined]
    finally:
        await pm.close()


async def test_third_party_policy_by_name_through_its_entry_point():
    cluster = FakeCluster(3)
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), balancer_policy="first_host", **FAST)
    try:
        await pm.ready(masters_count=1, replicas_count=2, timeout=5)
        assert type(pm.balancer).__module__ == "hasql_policy_example"
        for _ in range(10):
            async with pm.acquire_replica() as conn:
                assert await conn.execute("SELECT 1") == "db1:5432"
    finally:
        await pm.close()


def test_unknown_driver_lists_installed_and_never_invents_a_distribution():
    with pytest.raises(UnknownPluginError) as info:
        plugins.make_driver("nosuchdriver")
    message = str(info.value)
    assert "no installed plugin provides the driver 'nosuchdriver'" in message
    assert "pip install" not in message.split("Plugins that failed")[0]
    assert "Installed: none" in message  # the core environment has no driver plugin


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("psycopg", "pip install 'hasql-psycopg3[binary]'"),
        ("asyncpgsa", "pip install 'hasql-asyncpg[asyncpgsa]'"),
        ("aiopg_sa", "pip install 'hasql-aiopg[sa]'"),
        ("asyncgp", "Did you mean 'asyncpg'"),
    ],
)
def test_unknown_driver_names_the_distribution_that_provides_it(name, hint):
    with pytest.raises(UnknownPluginError, match=re.escape(hint)):
        plugins.make_driver(name)


def test_unknown_policy_lists_installed_policies():
    with pytest.raises(UnknownPluginError, match="Installed: first_host, greedy, random_weighted"):
        plugins.make_policy("fastest")


def test_broken_entry_point_names_distribution_version_and_cause():
    with pytest.raises(PluginLoadError) as info:
        plugins.make_policy("broken_example")
    message = str(info.value)
    assert "hasql-policy-example 1.2.3" in message
    assert "ModuleNotFoundError" in message and "pip install -U hasql-policy-example" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_two_plugins_claiming_one_name_are_reported():
    class OtherGreedy(BalancerPolicy):
        name = "greedy"

        def choose(self, candidates: Sequence[Candidate], read_only: bool) -> Candidate:
            return candidates[0]

    class Impostor:
        @hookimpl
        def hasql_balancer_policies(self) -> list[type[BalancerPolicy]]:
            return [OtherGreedy]

    provided = plugins._provided_by(Impostor(), "impostor-dist 0.1", plugins.POLICIES.call)
    provided += plugins._provided_by(policies, plugins.BUILTIN_SOURCE, plugins.POLICIES.call)
    with pytest.raises(PluginConflictError) as info:
        plugins._pick(plugins.POLICIES, "greedy", provided)
    assert "impostor-dist 0.1" in str(info.value) and "hasql-core (built in)" in str(info.value)


def test_plugin_not_fitting_the_hookspecs_is_refused():
    class Misspelt:
        @hookimpl
        def hasql_driver(self) -> list[object]:  # no such hook: it is hasql_drivers
            return []

    class WrongArguments:
        @hookimpl
        def hasql_host_state_changed(self, manager, old, new, extra) -> None:
            pass

    for bad in (Misspelt(), WrongArguments()):
        manager = plugins.new_plugin_manager()
        with pytest.raises(PluginError, match="does not fit the hookspecs"):
            plugins.register_plugin(manager, bad, type(bad).__name__)
        assert not manager.get_plugins()


def test_wrong_kinds_of_driver_and_policy_are_refused():
    cluster = FakeCluster(1)
    with pytest.raises(PluginError, match="is not a driver"):
        PoolManager(cluster.dsn, driver=GreedyPolicy)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="expected a balancer policy name, class or instance"):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), balancer_policy=42)  # type: ignore[arg-type]


async def test_observers_by_object_and_by_entry_point_name():
    from hasql_policy_example import observer

    seen: list[str] = []

    class Recorder:
        @hookimpl
        def hasql_host_state_changed(self, manager, old, new) -> None:
            seen.append(f"{new.name} {old.role.value}->{new.role.value}")

        @hookimpl
        def hasql_split_brain(self, manager, primaries, writable) -> None:
            seen.append(f"split brain, writes to {writable.name}")

        @hookimpl
        def hasql_pool_created(self, manager, host) -> None:
            seen.append(f"pool {host.name}")

    cluster = FakeCluster(2)
    observer.EVENTS.clear()
    pm = PoolManager(
        cluster.dsn, driver=FakeDriver(cluster), observers=[Recorder(), "example_observer"], **FAST
    )
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=5)
        assert "db0:5432 unknown->primary" in seen and "pool db1:5432" in seen
        assert ("db1:5432", "standby") in observer.EVENTS
        cluster.hosts[1].promote()
        await wait_for(lambda: "split brain, writes to db1:5432" in seen)
        probes = len(seen)
        await pm.wait_next_pool_check()
        assert len(seen) == probes  # no event without a change
    finally:
        await pm.close()


async def test_a_failing_observer_does_not_stop_routing(caplog):
    class Broken:
        @hookimpl
        def hasql_host_state_changed(self, manager, old, new) -> None:
            raise RuntimeError("observer bug")

    cluster = FakeCluster(2)
    pm = PoolManager(cluster.dsn, driver=FakeDriver(cluster), observers=[Broken()], **FAST)
    try:
        await pm.ready(masters_count=1, replicas_count=1, timeout=5)
        async with pm.acquire_master() as conn:
            assert await conn.execute("SELECT 1") == "db0:5432"
        assert "observer bug" in caplog.text
    finally:
        await pm.close()
