"""Discovery through the ``hasql`` entry points, and asyncpgsa's lazy import and its errors."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from asyncpg_helpers import DRIVER_NAME
from hasql_asyncpg import plugin
from hasql_asyncpg.driver import AsyncpgDriver, AsyncpgsaDriver

from hasql_core.driver import Driver
from hasql_core.testing.drivers import driver_class, installed_drivers, make_driver

HAS_ASYNCPGSA = importlib.util.find_spec("asyncpgsa") is not None


def test_entry_points_resolve_both_names() -> None:
    assert driver_class("asyncpg") is AsyncpgDriver
    assert driver_class("asyncpgsa") is AsyncpgsaDriver
    names = installed_drivers()
    assert names["asyncpg"].startswith("hasql-asyncpg ")
    assert names["asyncpgsa"].startswith("hasql-asyncpg ")


def test_hook_returns_the_driver_classes() -> None:
    classes = plugin.hasql_drivers()
    assert [cls.name for cls in classes] == ["asyncpg", "asyncpgsa"]
    assert all(issubclass(cls, Driver) for cls in classes)


def test_the_driver_under_test_is_made_by_name() -> None:
    driver = make_driver(DRIVER_NAME)
    assert driver.name == DRIVER_NAME


def run_python(code: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = None
    if pythonpath is not None:
        import os

        env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def test_plugin_imports_without_asyncpgsa_and_sqlalchemy() -> None:
    # None in sys.modules makes any import of that name fail, as if it were not installed.
    result = run_python(
        """
        import sys
        sys.modules["asyncpgsa"] = None
        sys.modules["sqlalchemy"] = None
        from hasql_core.errors import PluginError
        from hasql_core.testing.drivers import driver_class, make_driver
        assert driver_class("asyncpgsa").name == "asyncpgsa"
        make_driver("asyncpg")
        try:
            make_driver("asyncpgsa")
        except PluginError as error:
            print(error)
        else:
            raise SystemExit("no PluginError")
        """
    )
    assert result.returncode == 0, result.stderr
    assert "pip install asyncpgsa" in result.stdout


@pytest.mark.skipif(HAS_ASYNCPGSA, reason="asyncpgsa is installed here")
def test_missing_asyncpgsa_says_what_to_install() -> None:
    from hasql_core.errors import PluginError

    with pytest.raises(PluginError, match=r"pip install asyncpgsa"):
        AsyncpgsaDriver()


@pytest.mark.asyncpgsa_only
def test_asyncpgsa_driver_is_made_with_sqlalchemy_1() -> None:
    import sqlalchemy

    assert sqlalchemy.__version__.startswith("1.")
    assert AsyncpgsaDriver().name == "asyncpgsa"


def test_sqlalchemy_2_is_named_with_the_fix(tmp_path: Path) -> None:
    # An environment where asyncpgsa is installed next to SQLAlchemy 2: asyncpgsa's import of
    # the pypostgresql dialect fails. Real (tiny) distributions, found first on sys.path.
    sa = tmp_path / "sqlalchemy"
    (sa / "dialects" / "postgresql").mkdir(parents=True)
    (sa / "__init__.py").write_text('__version__ = "2.0.99"\n')
    (sa / "dialects" / "__init__.py").write_text("")
    (sa / "dialects" / "postgresql" / "__init__.py").write_text("")
    meta = tmp_path / "SQLAlchemy-2.0.99.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: SQLAlchemy\nVersion: 2.0.99\n")
    apgsa = tmp_path / "asyncpgsa"
    apgsa.mkdir()
    (apgsa / "__init__.py").write_text("from sqlalchemy.dialects.postgresql import pypostgresql\n")
    result = run_python(
        """
        from hasql_core.errors import PluginError
        from hasql_core.testing.drivers import make_driver
        try:
            make_driver("asyncpgsa")
        except PluginError as error:
            print(error)
        else:
            raise SystemExit("no PluginError")
        """,
        pythonpath=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "SQLAlchemy 2.0.99" in result.stdout
    assert "pip install 'sqlalchemy<2' asyncpgsa" in result.stdout
