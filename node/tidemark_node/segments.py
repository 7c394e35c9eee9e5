"""Segments hosted by this node: SegmentLog (pure chain bookkeeping) plus what the node
adds around it (layout, membership, peers, materialization and GC progress), and how a
segment is rebuilt from RocksDB on restart."""

from __future__ import annotations

import json
import time
from array import array
from bisect import bisect_right, insort
from collections.abc import Iterable
from dataclasses import dataclass, field

from tidemark_protocol import keys
from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.hydration import FETCHING, RUNNING, HydrationState
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership
from tidemark_protocol.records import peek_header
from tidemark_protocol.segment import Range, SegmentLog, SegmentMeta, in_ranges

from .store import Store


@dataclass(slots=True, eq=False)  # identity semantics: segments are hashable
class Segment:
    log: SegmentLog
    layout: VolumeLayout
    membership: Membership
    peers: dict[str, str] = field(default_factory=dict)
    materialized_lsn: int = 0
    gc_lsn: int = 0  # page versions below the latest one <= gc_lsn are gone: reads need R >= it
    log_gc_lsn: int = 0  # log records <= this are gone: gossip must ask above it
    pgmrpl: int = 0
    durable_scl: int = 0  # SCL as of the last synced write: the only SCL we ever report
    records: int = 0  # stored log records
    # Stored LSNs above materialized_lsn, ascending (backlog and materialization chunks).
    unmaterialized: array = field(default_factory=lambda: array("Q"))
    # Materialization boundaries since start: GC may only cut at one of them.
    boundaries: list[int] = field(default_factory=list)
    corrupt_lsn: int | None = None  # first corrupt record met by a background task
    deleted: bool = False
    # Rebuild progress while this segment hydrates from peers (hydration/); None: idle.
    hydration: dict | None = None
    # Snapshot pins (snapshot.py): token -> (LSN, expiry); GC keeps page versions at them.
    pins: dict = field(default_factory=dict)
    corruptions_detected: int = 0  # scrub.py
    corruptions_repaired: int = 0

    @property
    def pg(self) -> int:
        return self.log.meta.pg

    @property
    def meta(self) -> SegmentMeta:
        return self.log.meta

    def note_stored(self, records: list) -> None:
        self.records += len(records)
        un = self.unmaterialized
        for r in records:
            if not un or r.lsn > un[-1]:
                un.append(r.lsn)
            else:
                insort(un, r.lsn)

    def note_dropped(self, lsns: list[int]) -> None:
        self.records -= len(lsns)
        drop = set(lsns)
        self.unmaterialized = array("Q", (x for x in self.unmaterialized if x not in drop))

    def materialize_target(self) -> int:
        return min(self.durable_scl, self.meta.vdl_hint)

    def backlog(self) -> int:
        return bisect_right(self.unmaterialized, self.materialize_target())

    def to_json(self) -> dict:
        return {
            "seg": self.meta.to_json(),
            "layout": self.layout.to_json(),
            "membership": self.membership.to_json(),
            "peers": self.peers,
            "materialized_lsn": self.materialized_lsn,
            "gc_lsn": self.gc_lsn,
            "log_gc_lsn": self.log_gc_lsn,
            "pgmrpl": self.pgmrpl,
            "records": self.records,
            "hydration_state": self.hydration.get("state") if self.hydration is not None else None,
        }

    def meta_bytes(self) -> bytes:
        return json.dumps(self.to_json(), separators=(",", ":")).encode()

    def status(self) -> dict:
        return {
            "pg": self.pg,
            "scl": self.durable_scl,
            "max_lsn": self.log.max_lsn,
            "holes": self.log.has_holes(),
            "volume_epoch": self.meta.volume_epoch,
            "membership_epoch": self.meta.membership_epoch,
            "vdl_hint": self.meta.vdl_hint,
            "materialized_lsn": self.materialized_lsn,
            "gc_lsn": self.gc_lsn,
            "log_gc_lsn": self.log_gc_lsn,
            "records": self.records,
            "backlog": self.backlog(),
            "corrupt_lsn": self.corrupt_lsn,
            "hydration": dict(self.hydration) if self.hydration is not None else {
                "state": HydrationState.IDLE, "bytes": 0, "total_bytes": 0, "pct": 0.0, "error": None},
            "corruptions_detected": self.corruptions_detected,
            "corruptions_repaired": self.corruptions_repaired,
        }

    def hydrating(self) -> bool:
        """True while the segment's base (snapshot) or log backfill is being fetched:
        gossip, GC and scrub leave it alone until then."""
        return self.hydration is not None and self.hydration.get("state") in FETCHING

    def hydration_state(self) -> HydrationState:
        return HydrationState.IDLE if self.hydration is None else self.hydration["state"]

    def rebase(self, store: Store, base: int, truncations: Iterable[Range] = (),
               vdl_hint: int = 0) -> list[bytes]:
        """Start the segment from a page snapshot at `base` (SegmentLog.rebase): a
        hydration's snapshot phase and a restore install. Everything <= base counts as
        materialized and below the GC horizons. Returns the keys to delete, to be
        committed with the meta in one write."""
        result = self.log.rebase(base, truncations, vdl_hint)
        deletes = drop_keys(store, self.pg, result.dropped)
        self.note_dropped(result.dropped)
        if result.rebased:
            self.materialized_lsn = base
            self.gc_lsn = max(self.gc_lsn, base)
            self.log_gc_lsn = max(self.log_gc_lsn, base)
            self.boundaries = [base]
            self.unmaterialized = array("Q", (x for x in self.unmaterialized if x > base))
        return deletes

    def pin_limit(self) -> int | None:
        """Lowest LSN pinned by a live snapshot (GC's horizon may not pass it)."""
        now = time.monotonic()
        for token in [t for t, (_lsn, exp) in self.pins.items() if exp is not None and exp < now]:
            del self.pins[token]
        return min((lsn for lsn, _exp in self.pins.values()), default=None)


def new_segment(
    pg: int, layout: VolumeLayout, membership: Membership, peers: dict[str, str], volume_epoch: int
) -> Segment:
    meta = SegmentMeta(pg, volume_epoch=volume_epoch, membership_epoch=membership.epoch)
    return Segment(SegmentLog(meta), layout, membership, dict(peers))


def load_segment(store: Store, raw_meta: bytes) -> Segment:
    """Rebuild a segment from its meta and its stored log keys (blocking: run in executor)."""
    data = json.loads(raw_meta)
    meta = SegmentMeta.from_json(data["seg"])
    pg = meta.pg
    materialized = int(data.get("materialized_lsn", 0))
    # Every record above min(floor, materialized) is still stored (GC cuts below both).
    start = min(meta.floor, materialized)
    chain_input: list[tuple[int, int]] = []
    unmat = array("Q")
    for _key, raw in store.scan(keys.log_key(pg, start + 1), keys.prefix_end(keys.pg_prefix(b"L", pg))):
        header = peek_header(raw)
        lsn, prev = header.lsn, header.prev_lsn_in_pg
        if in_ranges(lsn, meta.truncations):
            continue  # a seal's meta reached disk before its deletes: stays void
        if lsn > meta.floor:
            chain_input.append((lsn, prev))
        if lsn > materialized:
            unmat.append(lsn)
    log = SegmentLog(meta, chain_input)
    seg = Segment(
        log,
        VolumeLayout.from_json(data["layout"]),
        Membership.from_json(data["membership"]),
        dict(data.get("peers", {})),
        materialized_lsn=materialized,
        gc_lsn=int(data.get("gc_lsn", 0)),
        log_gc_lsn=int(data.get("log_gc_lsn", 0)),
        pgmrpl=int(data.get("pgmrpl", 0)),
        durable_scl=log.scl,
        unmaterialized=unmat,
        boundaries=[materialized],
    )
    seg.records = int(data["records"]) if "records" in data else count_records(store, pg)
    if data.get("hydration_state") in RUNNING:
        # A rebuild does not survive a restart: say so; the executor hydrates it again.
        seg.hydration = {"state": HydrationState.FAILED, "bytes": 0, "total_bytes": 0, "pct": 0.0,
                         "error": "interrupted by a node restart: hydrate again"}
    elif data.get("hydration_state") == HydrationState.DONE:
        # Finished and durable before the restart: a repairer that has not finalized yet
        # must see "done", not "idle", or it would rebuild the whole segment again.
        seg.hydration = {"state": HydrationState.DONE, "bytes": 0, "total_bytes": 0, "pct": 100.0, "error": None}
    return seg


def count_records(store: Store, pg: int) -> int:
    prefix = keys.pg_prefix(b"L", pg)
    return sum(1 for _ in store.scan_keys(prefix, keys.prefix_end(prefix)))


def drop_keys(store: Store, pg: int, lsns: list[int]) -> list[bytes]:
    """L and X keys of dropped records. Point lookups on the loop thread: a seal drops
    only records above the VDL, a small set."""
    out = []
    for lsn in lsns:
        key = keys.log_key(pg, lsn)
        out.append(key)
        raw = store.get(key)
        if raw is None:
            continue  # accepted but not yet written: the X key is orphaned (reads skip it)
        try:
            out.append(keys.index_key(pg, peek_header(raw).page, lsn))
        except MalformedFrame:
            pass
    return out
