"""The pytest plugin: fixtures, marker, option, and a cheap import."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hasql_core import Role
from hasql_core.testing.cluster import LocalCluster

pytestmark = pytest.mark.cluster


@pytest.mark.hasql_cluster(replicas=1, settings={"work_mem": "5MB"})
def test_marker_configures_hasql_cluster(hasql_cluster: LocalCluster) -> None:
    assert [node.role for node in hasql_cluster.nodes] == [Role.PRIMARY, Role.STANDBY]
    assert hasql_cluster.execute(1, "SHOW work_mem") == [("5MB",)]


@pytest.mark.hasql_cluster(0)
def test_hasql_proxied_cluster(hasql_proxied_cluster: LocalCluster) -> None:
    assert len(hasql_proxied_cluster.nodes) == 1
    hasql_proxied_cluster.proxy(0).set_mode("pass")
    assert hasql_proxied_cluster.proxied_dsn.count("127.0.0.1:") == 1


@pytest.mark.hasql_cluster(replicas=1)
async def test_fixture_in_an_async_test(hasql_cluster: LocalCluster) -> None:
    await asyncio.to_thread(hasql_cluster.promote, 1)
    rows = await asyncio.to_thread(hasql_cluster.execute, 1, "SELECT pg_is_in_recovery()")
    assert rows == [("f",)]


def test_plugin_import_is_cheap() -> None:
    code = (
        "import sys, hasql_core.testing.pytest_plugin; "
        "print(sorted(m for m in sys.modules if m.startswith('hasql_core.testing.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['hasql_core.testing.pytest_plugin']"


def test_option_and_marker_in_a_fresh_session(tmp_path: Path) -> None:
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            import pytest

            @pytest.mark.hasql_cluster(replicas=0)
            def test_uses_cluster(hasql_cluster):
                pass
            """
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            f"--hasql-pg-bindir={tmp_path / 'nowhere'}",
            str(tmp_path / "test_inner.py"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 error" in result.stdout
    assert "ClusterError" in result.stdout
    assert "nowhere" in result.stdout
