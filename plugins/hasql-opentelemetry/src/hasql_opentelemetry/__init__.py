"""hasql-opentelemetry: hasql-core's pool and failover metrics through OpenTelemetry.

``PoolManager(..., observers=["opentelemetry"])`` reports every pool (one per host) with the
semantic-convention ``db.client.connection.*`` metrics, and the cluster (roles, availability, lag,
probe times, failovers, split brain, errors) under ``hasql.``, on the global meter provider. Pass
``observers=[OpenTelemetryObserver(meter_provider=...)]`` for another provider. :func:`dashboard`
returns the Grafana dashboard shipped with the plugin. Metric and attribute names are in
:mod:`hasql_opentelemetry.names`.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from .observer import SCOPE, OpenTelemetryObserver, __version__

__all__ = ["SCOPE", "OpenTelemetryObserver", "__version__", "dashboard", "dashboard_json"]


def dashboard_json() -> str:
    """The Grafana dashboard (pool usage per host, roles over time, lag, failovers) as JSON text,
    for a Prometheus data source scraping OpenTelemetry's Prometheus exporter."""
    return resources.files(__package__).joinpath("grafana-dashboard.json").read_text("utf-8")


def dashboard() -> dict[str, Any]:
    """:func:`dashboard_json`, parsed."""
    parsed: dict[str, Any] = json.loads(dashboard_json())
    return parsed
