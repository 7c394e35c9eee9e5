"""OpenTelemetry metrics of the operator, exported in Prometheus text format.

Reconcile counters and durations, plus one gauge per cluster quantity (metric_samples.py:
healthy segments per PG, VDL, conditions, backup window and storage, instance lag)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

from .metric_samples import GAUGES, samples

_meter = metrics.get_meter("tidemark_operator")
_reconciles = _meter.create_counter("tidemark_operator_reconciles", description="reconcile passes")
_duration = _meter.create_histogram("tidemark_operator_reconcile_seconds", unit="s",
                                    description="reconcile pass duration")
_state: dict[tuple[str, str], tuple[dict[str, Any], str | None]] = {}  # -> (status, created)


def _observer(gauge: str) -> Callable[[CallbackOptions], Iterator[Observation]]:
    """The callback of GAUGE: its samples of every cluster recorded so far."""
    def observe(_options: CallbackOptions) -> Iterator[Observation]:
        for (ns, name), (status, created) in list(_state.items()):
            for metric, value, labels in samples(ns, name, status, created):
                if metric == gauge:
                    yield Observation(value, labels)
    return observe


for _name, (_unit, _description) in GAUGES.items():
    _meter.create_observable_gauge(_name, callbacks=[_observer(_name)], unit=_unit,
                                   description=_description)


def record_reconcile(source: str, result: str, seconds: float) -> None:
    _reconciles.add(1, {"source": source, "result": result})
    _duration.record(seconds, {"source": source})


def record_status(ns: str, name: str, status: dict[str, Any], created: str | None = None) -> None:
    """STATUS: the cluster's status after a pass; CREATED: its metadata.creationTimestamp."""
    _state[(ns, name)] = (status, created)


def forget(ns: str, name: str) -> None:
    """A deleted cluster's gauges go with it."""
    _state.pop((ns, name), None)


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - metrics endpoint
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    start_http_server(port, addr=host)
