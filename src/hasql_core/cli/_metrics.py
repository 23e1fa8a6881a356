"""``hasql demo --metrics``: the manager's metrics through hasql-opentelemetry, as Prometheus text.

The packages are optional (``pip install hasql-opentelemetry opentelemetry-sdk
opentelemetry-exporter-prometheus``) and imported by name only when asked for; the manager finds the
observer through its ``opentelemetry`` entry point, so hasql-core never imports the plugin.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable

from ._common import CliError

#: The observer's entry point name, as given to ``PoolManager(observers=[...])``.
OBSERVER = "opentelemetry"
_INSTALL = "pip install hasql-opentelemetry opentelemetry-sdk opentelemetry-exporter-prometheus"
#: Prometheus metric families shown: the plugin's pool and cluster metrics.
_PREFIXES = ("db_client_connection_", "hasql_")


def prometheus_metrics() -> Callable[[], str]:
    """Set the global meter provider to one with OpenTelemetry's Prometheus reader, and return a
    function that renders the plugin's metrics as Prometheus text (call it while the manager is
    open: a closed manager is no longer reported). Raises :class:`CliError` with the install hint
    when a package is missing."""
    if not importlib.metadata.entry_points(group="hasql", name=OBSERVER):
        raise CliError(f"--metrics needs the hasql-opentelemetry plugin: {_INSTALL}", 2)
    try:
        otel_metrics = importlib.import_module("opentelemetry.metrics")
        sdk_metrics = importlib.import_module("opentelemetry.sdk.metrics")
        exporter = importlib.import_module("opentelemetry.exporter.prometheus")
        prometheus = importlib.import_module("prometheus_client")
    except ImportError as error:
        raise CliError(f"--metrics needs {error.name}: {_INSTALL}", 2) from None
    provider = sdk_metrics.MeterProvider(metric_readers=[exporter.PrometheusMetricReader()])
    otel_metrics.set_meter_provider(provider)

    def render() -> str:
        text: str = prometheus.generate_latest(prometheus.REGISTRY).decode()
        return "\n".join(line for line in text.splitlines() if _is_ours(line))

    return render


def _is_ours(line: str) -> bool:
    """Whether a line of Prometheus text belongs to one of the plugin's metric families."""
    if line.startswith(("# HELP ", "# TYPE ")):
        return line.split(" ", 3)[2].startswith(_PREFIXES)
    return line.startswith(_PREFIXES)
