"""Every mistake a plugin author can make gets its own error, and breaks nothing else.

Each test installs a real distribution (a ``.dist-info`` with an ``entry_points.txt`` and a module)
into a temporary ``sys.path`` entry, so resolution goes through ``importlib.metadata`` as in a user's
environment.
"""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hasql_core import PluginConflictError, PluginError, PoolManager
from hasql_core import _plugins as plugins
from hasql_core.testing.fake_driver import FakeCluster, FakeDriver

Install = Callable[[str, str, str], None]


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Install]:
    """``install(dist, entry_point_name, module_source)``: a distribution providing one entry point
    in the ``hasql`` group whose module has ``module_source``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    added: list[str] = []

    def make(dist: str, entry_point: str, source: str) -> None:
        module = f"{dist.replace('-', '_')}_{entry_point}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-1.0.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        with (info / "entry_points.txt").open("a") as f:
            if f.tell() == 0:
                f.write("[hasql]\n")
            f.write(f"{entry_point} = {module}\n")
        added.append(module)
        importlib.invalidate_caches()

    yield make
    for module in added:
        sys.modules.pop(module, None)
    importlib.invalidate_caches()


POLICY = """
    from hasql_core import BalancerPolicy, hookimpl

    class {cls}(BalancerPolicy):
        name = "{name}"
        def choose(self, candidates, read_only):
            return candidates[-1]

    {decorator}
    def {hook}():
        return [{returned}]
"""


def _policy(name: str, **overrides: str) -> str:
    values = {
        "cls": "Last",
        "name": name,
        "decorator": "@hookimpl",
        "hook": "hasql_balancer_policies",
        "returned": "Last",
    }
    values.update(overrides)
    return POLICY.format(**values)


def test_entry_point_without_hookimpl_says_to_decorate(install):
    install("hasql-forgot", "forgot", _policy("forgot", decorator=""))
    with pytest.raises(
        PluginError, match=r"implements no hasql hook: decorate .*@hasql_core.hookimpl"
    ):
        plugins.make_policy("forgot")


def test_misspelt_hook_is_reported_and_breaks_no_other_name(install):
    install("hasql-typo", "typo", _policy("typo", hook="hasql_balancer_polices"))
    install("hasql-fine", "fine", _policy("fine"))
    assert plugins.make_policy("fine").name == "fine"
    with pytest.raises(PluginError, match=r"hasql-typo 1.0 does not fit the hookspecs"):
        plugins.make_policy("typo")
    # Listing and resolving other names still works; the broken plugin is named in the listing.
    assert plugins.make_policy("greedy").name == "greedy"
    with pytest.raises(PluginError, match="hasql-typo"):
        plugins.make_policy("nosuchpolicy")


def test_hook_returning_a_non_policy_is_refused_at_resolution(install):
    install("hasql-odd", "odd", _policy("odd", returned="dict"))
    with pytest.raises(PluginError, match=r"returned <class 'dict'>.*not a subclass of"):
        plugins.make_policy("odd")


def test_third_party_policy_claiming_a_built_in_name_is_a_conflict(install):
    install("hasql-impostor", "greedy", _policy("greedy"))
    with pytest.raises(PluginConflictError, match=r"hasql-impostor 1.0 declares .*'greedy'"):
        plugins.make_policy("greedy")


def test_async_observer_hook_is_refused():
    class AsyncObserver:
        from hasql_core import hookimpl

        @hookimpl
        async def hasql_pool_created(self, manager, host):  # never awaited by pluggy
            pass

    cluster = FakeCluster(2)
    with pytest.raises(PluginError, match=r"hasql_pool_created .* is an async def"):
        PoolManager(cluster.dsn, driver=FakeDriver(cluster), observers=[AsyncObserver()])


async def test_policy_options_reach_a_policy_and_wrong_options_are_named(install):
    install(
        "hasql-prefer",
        "prefer",
        """
        from hasql_core import BalancerPolicy, hookimpl

        class Prefer(BalancerPolicy):
            name = "prefer"
            def __init__(self, host):
                self.host = host
            def choose(self, candidates, read_only):
                return next((c for c in candidates if c.state.host == self.host), candidates[0])

        @hookimpl
        def hasql_balancer_policies():
            return [Prefer]
        """,
    )
    cluster = FakeCluster(3)
    pm = PoolManager(
        cluster.dsn,
        driver=FakeDriver(cluster),
        balancer_policy="prefer",
        balancer_policy_options={"host": "db2"},
    )
    try:
        await pm.ready(masters_count=1, replicas_count=2, timeout=5)
        for _ in range(5):
            async with pm.acquire_replica() as conn:
                assert await conn.execute("SELECT 1") == "db2:5432"
    finally:
        await pm.close()
    with pytest.raises(Exception, match=r"'prefer' .* does not accept the options \['hots'\]"):
        plugins.make_policy("prefer", {"hots": "db2"})
