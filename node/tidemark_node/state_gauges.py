"""Observable gauges of a node's state (served on /metrics with the counters of
telemetry.py): disk use, and per hosted segment its SCL, the VDL hint, the log backlog and
the progress of a hydration (a repair's rebuild or a restore's install). Read at scrape
time from what /v1/status shows; nothing is kept twice."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from tidemark_protocol.hydration import RUNNING, HydrationState

from .state import NodeState

SegmentValue = Callable[[dict], float]
_HYDRATING = RUNNING | {HydrationState.INSTALLING}

# instrument name -> (unit, description, value of one segment's /v1/status entry)
SEGMENT_GAUGES: dict[str, tuple[str, str, SegmentValue]] = {
    "tidemark_segment_scl": ("", "segment complete LSN (contiguous durable records)",
                             lambda s: float(s["scl"])),
    "tidemark_segment_vdl_hint": ("", "volume durable LSN the writer last sent",
                                  lambda s: float(s["vdl_hint"])),
    "tidemark_segment_materialized_lsn": ("", "LSN up to which records are coalesced into pages",
                                          lambda s: float(s["materialized_lsn"])),
    "tidemark_segment_backlog": ("", "records not materialized yet", lambda s: float(s["backlog"])),
    "tidemark_segment_hydration_bytes": ("By", "bytes fetched by the segment's hydration",
                                         lambda s: float(s["hydration"].get("bytes") or 0)),
    "tidemark_segment_hydration_total_bytes": ("By", "bytes the segment's hydration must fetch",
                                               lambda s: float(s["hydration"].get("total_bytes") or 0)),
    "tidemark_segment_hydrating": ("", "1 while the segment hydrates (snapshot, log, catching up)",
                                   lambda s: float(s["hydration"].get("state") in _HYDRATING)),
}


def _segment_observer(state: NodeState,
                      value: SegmentValue) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        for seg in sorted(list(state.segments.values()), key=lambda s: s.pg):
            if not seg.deleted:
                yield Observation(value(seg.status()), {"pg": str(seg.pg)})
    return observe


def register(state: NodeState) -> None:
    meter = state.telemetry.meter_provider.get_meter("tidemark.node.state")
    meter.create_observable_gauge(
        "tidemark_node_disk_bytes", unit="By", description="bytes of the node's RocksDB files",
        callbacks=[lambda _o: [Observation(float(state.store.disk_bytes()))]])
    meter.create_observable_gauge(
        "tidemark_node_segments", description="segments hosted",
        callbacks=[lambda _o: [Observation(float(sum(1 for s in state.segments.values() if not s.deleted)))]])
    for name, (unit, description, value) in SEGMENT_GAUGES.items():
        meter.create_observable_gauge(name, unit=unit, description=description,
                                      callbacks=[_segment_observer(state, value)])
