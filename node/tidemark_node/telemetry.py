"""OpenTelemetry metrics (exported as Prometheus text on /metrics) and trace spans.

Counters are bumped per frame or per commit, never per record, to keep the foreground
path cheap, and they are tallies (`Tally`: a plain integer add) read by observable
counters at collection time: the SDK's synchronous `Counter.add` cost ~10 µs per call,
several per frame on six nodes. Spans are created around batch commits; they are
recorded and exported to the console only with `tidemark node run --trace-console` (no
collector exists on a loopback test fleet, and an unsampled span costs almost nothing).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import CallbackOptions, Meter, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

_SYNC_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class Tally:
    """A monotonic count per attribute set, observed by an OpenTelemetry counter."""

    def __init__(self, meter: Meter, name: str, unit: str = "", description: str = "") -> None:
        self.values: dict[tuple[tuple[str, str], ...], int] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], unit=unit, description=description)

    def add(self, amount: int, attributes: Mapping[str, str] | None = None) -> None:
        key = tuple(sorted(attributes.items())) if attributes else ()
        self.values[key] = self.values.get(key, 0) + amount

    def _observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, dict(key)) for key, value in list(self.values.items())]


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
        self.records_received = Tally(
            meter, "tidemark_records_received", description="new log records made durable from the writer"
        )
        self.bytes_received = Tally(
            meter, "tidemark_received", unit="By", description="bytes of WriteBatch frames received"
        )
        self.batches = Tally(meter, "tidemark_batches", description="WriteBatch frames accepted")
        self.malformed = Tally(
            meter, "tidemark_malformed_frames", description="frames refused because they did not decode"
        )
        self.refused_groups = Tally(
            meter, "tidemark_refused_groups", description="PG groups refused (epoch, unknown segment)"
        )
        self.commits = Tally(meter, "tidemark_commits", description="synced RocksDB writes")
        self.sync_latency = meter.create_histogram(
            "tidemark_sync_seconds", unit="s", description="latency of one synced group commit"
        )
        self.gossip_pulled = Tally(
            meter, "tidemark_gossip_records_pulled", description="records pulled from peers by gossip"
        )
        self.materialized = Tally(
            meter, "tidemark_records_materialized", description="records coalesced into page versions"
        )
        self.gc_deleted = Tally(
            meter, "tidemark_gc_deleted", description="page versions and log records dropped by GC"
        )
        self.corrupt = Tally(
            meter, "tidemark_corrupt_records", description="stored records that failed their CRC on read"
        )
        self.page_reads = Tally(meter, "tidemark_page_reads", description="pages served")

        self.tracer_provider = TracerProvider(resource=resource, sampler=ALWAYS_ON if trace_console else ALWAYS_OFF)
        if trace_console:
            self.tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
        self.tracer = self.tracer_provider.get_tracer("tidemark.node")

    @staticmethod
    def render() -> tuple[bytes, str]:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
