"""Helpers shared by the hasql-opentelemetry tests (imported by name: this folder is on sys.path)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

from hasql_opentelemetry import SCOPE, OpenTelemetryObserver, names
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.semconv._incubating.metrics import db_metrics

#: The semantic-convention pool metrics this plugin reports.
POOL_METRICS = [
    names.CONNECTION_COUNT,
    names.CONNECTION_IDLE_MAX,
    names.CONNECTION_IDLE_MIN,
    names.CONNECTION_MAX,
    names.CONNECTION_PENDING_REQUESTS,
    names.CONNECTION_TIMEOUTS,
    names.CONNECTION_WAIT_TIME,
    names.CONNECTION_USE_TIME,
]


class Telemetry:
    """A meter provider of its own, its in-memory reader, and an observer reporting to it."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])
        self.observer = OpenTelemetryObserver(meter_provider=self.provider)

    def collect(self) -> dict[str, Metric]:
        """Collect now (in the calling thread); this plugin's metrics by name."""
        return metrics_by_name(self.reader)


def metrics_by_name(reader: InMemoryMetricReader) -> dict[str, Metric]:
    """One collection of ``reader``: the metrics of this plugin's scope, by name."""
    data = reader.get_metrics_data()
    found: dict[str, Metric] = {}
    if data is None:
        return found
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            if scope_metrics.scope.name == SCOPE:
                for metric in scope_metrics.metrics:
                    found[metric.name] = metric
    return found


class _ConventionMeter:
    """Stands in for a Meter to learn what the conventions package makes for each metric."""

    def create_up_down_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return ("up_down_counter", unit)

    def create_counter(self, name: str, unit: str = "", description: str = "") -> Any:
        return ("counter", unit)

    def create_histogram(self, name: str, unit: str = "", description: str = "") -> Any:
        return ("histogram", unit)


def convention(name: str) -> tuple[str, str]:
    """(instrument kind, unit) of metric ``name`` as the semantic conventions package makes it;
    checks that the package knows the name."""
    assert getattr(db_metrics, name.upper().replace(".", "_")) == name
    factory = getattr(db_metrics, "create_" + name.replace(".", "_"))
    made: tuple[str, str] = factory(_ConventionMeter())
    return made


def instrument_kind(metric: Metric) -> str:
    """The instrument kind a reported metric comes from, as far as the data model tells."""
    if isinstance(metric.data, Histogram):
        return "histogram"
    assert isinstance(metric.data, Sum), metric
    return "counter" if metric.data.is_monotonic else "up_down_counter"


def points(metric: Metric) -> list[Any]:
    """The data points of ``metric``."""
    return list(metric.data.data_points)


def attribute_values(metric: Metric, key: str) -> set[Any]:
    """Every value attribute ``key`` takes among the points of ``metric``."""
    return {(p.attributes or {}).get(key) for p in points(metric)}


def value_of(metric: Metric, attributes: Mapping[str, str]) -> float | None:
    """The value of the one point of a sum or gauge whose attributes include ``attributes``; None
    when there is none."""
    found = [
        p
        for p in points(metric)
        if isinstance(p, NumberDataPoint) and _includes(p.attributes, attributes)
    ]
    assert len(found) <= 1, found
    return found[0].value if found else None


def total_of(metrics: Mapping[str, Metric], name: str, attributes: Mapping[str, str]) -> float:
    """The sum of the points of metric ``name`` whose attributes include ``attributes`` (0 when
    the metric was not reported)."""
    metric = metrics.get(name)
    if metric is None:
        return 0
    return float(
        sum(
            p.value
            for p in points(metric)
            if isinstance(p, NumberDataPoint) and _includes(p.attributes, attributes)
        )
    )


def histogram_point(metric: Metric, attributes: Mapping[str, str]) -> HistogramDataPoint | None:
    """The one histogram point whose attributes include ``attributes``."""
    assert isinstance(metric.data, Histogram)
    found = [p for p in metric.data.data_points if _includes(p.attributes, attributes)]
    assert len(found) <= 1, found
    return found[0] if found else None


def _includes(attributes: Mapping[str, Any] | None, wanted: Mapping[str, str]) -> bool:
    attributes = attributes or {}
    return all(attributes.get(key) == value for key, value in wanted.items())


async def eventually(check: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll ``check`` every 20 ms until it is true; fail after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not true within {timeout}s: {what or check}")
        await asyncio.sleep(0.02)
