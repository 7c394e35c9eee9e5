"""OpenTelemetry metrics of the operator, exported in Prometheus text format."""

from __future__ import annotations

from typing import Any

from opentelemetry import metrics
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import start_http_server

_meter = metrics.get_meter("tidemark_operator")
_reconciles = _meter.create_counter("tidemark_operator_reconciles", description="reconcile passes")
_duration = _meter.create_histogram("tidemark_operator_reconcile_seconds", unit="s",
                                    description="reconcile pass duration")
_state: dict[tuple[str, str], dict[str, Any]] = {}
BACKUP_GAUGES = ("BackupRetentionPeriodStorageUsed", "SnapshotStorageUsed", "TotalBackupStorageBilled",
                 "VolumeBytesUsed")


def _observe(_options: Any) -> Any:
    for (ns, name), st in list(_state.items()):
        yield metrics.Observation(int(st.get("writablePGs", 0)),
                                  {"namespace": ns, "cluster": name, "what": "writable_pgs"})
        yield metrics.Observation(int(st.get("vdl", 0)),
                                  {"namespace": ns, "cluster": name, "what": "vdl"})
        for key, value in (st.get("backup") or {}).items():
            if key in BACKUP_GAUGES and isinstance(value, int):  # status.backup storage metrics
                yield metrics.Observation(value, {"namespace": ns, "cluster": name, "what": key})


_meter.create_observable_gauge("tidemark_operator_cluster", callbacks=[_observe],
                               description="per cluster: writable PGs, VDL and backup storage bytes")


def record_reconcile(source: str, result: str, seconds: float) -> None:
    _reconciles.add(1, {"source": source, "result": result})
    _duration.record(seconds, {"source": source})


def record_status(ns: str, name: str, status: dict[str, Any]) -> None:
    _state[(ns, name)] = status


def serve(port: int, host: str = "0.0.0.0") -> None:  # noqa: S104 - metrics endpoint
    metrics.set_meter_provider(MeterProvider(metric_readers=[PrometheusMetricReader()]))
    start_http_server(port, addr=host)
