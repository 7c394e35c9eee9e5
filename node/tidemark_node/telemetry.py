"""OpenTelemetry metrics (exported as Prometheus text on /metrics) and trace spans.

Counters are bumped per frame or per commit, never per record, to keep the foreground
path cheap. Spans are created around batch commits; they are exported to the console
only with `tidemark node run --trace-console` (no collector exists on a loopback test
fleet).
"""

from __future__ import annotations

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

_SYNC_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class Telemetry:
    def __init__(self, node: str, zone: str, trace_console: bool = False) -> None:
        resource = Resource.create({"service.name": "tidemark-node", "tidemark.node": node, "tidemark.zone": zone})
        reader = PrometheusMetricReader()
        view = View(
            instrument_name="tidemark_sync_seconds",
            aggregation=ExplicitBucketHistogramAggregation(_SYNC_BUCKETS),
        )
        self.meter_provider = MeterProvider(resource=resource, metric_readers=[reader], views=[view])
        meter = self.meter_provider.get_meter("tidemark.node")
        self.records_received = meter.create_counter(
            "tidemark_records_received", description="new log records made durable from the writer"
        )
        self.bytes_received = meter.create_counter(
            "tidemark_received", unit="By", description="bytes of WriteBatch frames received"
        )
        self.batches = meter.create_counter("tidemark_batches", description="WriteBatch frames accepted")
        self.malformed = meter.create_counter(
            "tidemark_malformed_frames", description="frames refused because they did not decode"
        )
        self.refused_groups = meter.create_counter(
            "tidemark_refused_groups", description="PG groups refused (epoch, unknown segment)"
        )
        self.commits = meter.create_counter("tidemark_commits", description="synced RocksDB writes")
        self.sync_latency = meter.create_histogram(
            "tidemark_sync_seconds", unit="s", description="latency of one synced group commit"
        )
        self.gossip_pulled = meter.create_counter(
            "tidemark_gossip_records_pulled", description="records pulled from peers by gossip"
        )
        self.materialized = meter.create_counter(
            "tidemark_records_materialized", description="records coalesced into page versions"
        )
        self.gc_deleted = meter.create_counter(
            "tidemark_gc_deleted", description="page versions and log records dropped by GC"
        )
        self.corrupt = meter.create_counter(
            "tidemark_corrupt_records", description="stored records that failed their CRC on read"
        )
        self.page_reads = meter.create_counter("tidemark_page_reads", description="pages served")

        self.tracer_provider = TracerProvider(resource=resource)
        if trace_console:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        self.tracer = self.tracer_provider.get_tracer("tidemark.node")

    @staticmethod
    def render() -> tuple[bytes, str]:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
