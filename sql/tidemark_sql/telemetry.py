"""OpenTelemetry metrics of an instance process, exported as Prometheus text on the
admin endpoint's /metrics (as the nodes do). Instruments made through the global API
before this runs (the writer's, the reader's lag histogram) attach once it does."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

_LAG_BUCKETS = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 5000]
_lag_sources: list[Callable[[], float]] = []  # the replica's Reader.lag_ms (one per process)
_provider: MeterProvider | None = None


def _observe_lag(_options: CallbackOptions) -> Iterable[Observation]:
    for source in _lag_sources[-1:]:
        yield Observation(source())


def setup(role: str, lag_ms: Callable[[], float] | None = None) -> MeterProvider:
    """Once per process (OpenTelemetry keeps one global provider); a later call only
    points the lag gauge at a new source."""
    global _provider
    if lag_ms is not None:
        _lag_sources.append(lag_ms)
    if _provider is not None:
        return _provider
    resource = Resource.create({"service.name": "tidemark-sql", "tidemark.role": role})
    view = View(instrument_name="tidemark_replica_lag", aggregation=ExplicitBucketHistogramAggregation(_LAG_BUCKETS))
    _provider = MeterProvider(resource=resource, metric_readers=[PrometheusMetricReader()], views=[view])
    metrics.set_meter_provider(_provider)
    _provider.get_meter("tidemark.replica").create_observable_gauge(
        "tidemark_replica_lag_current", callbacks=[_observe_lag], unit="ms",
        description="how stale the newest VDL this replica knows is")
    return _provider


def render() -> tuple[bytes, str]:
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
