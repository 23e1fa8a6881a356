"""``hasql demo --metrics`` without the hasql-opentelemetry plugin (the cli environment has none):
exit 2 with what to install, before any server starts. With the plugin, the demo is tested in
plugins/hasql-opentelemetry/tests/test_otel_demo.py."""

from __future__ import annotations

import importlib.metadata

import pytest

from .conftest import run_cli


@pytest.mark.skipif(
    bool(importlib.metadata.entry_points(group="hasql", name="opentelemetry")),
    reason="hasql-opentelemetry is installed here",
)
def test_demo_metrics_without_the_plugin_says_what_to_install() -> None:
    result = run_cli("demo", "--short", "--metrics", timeout=60)
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "pip install hasql-opentelemetry" in result.stderr
    assert "Traceback" not in result.stderr
    assert "starting a local cluster" not in result.stdout
