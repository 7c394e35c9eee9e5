"""Background garbage collection.

Page versions: below B = the highest materialization boundary <= PGMRPL, each page keeps
only its latest version <= B (a read at R >= B needs nothing older). Reads below B are
then refused with `below_horizon`.

Log records: conservative. Only records <= min(B, SegmentLog floor, SCL - tail) go:
<= B means their pages are covered by kept versions; <= floor means a restart never
needs them to rebuild the chain; the tail keeps recent log for lagging peers' gossip.
"""

from __future__ import annotations

import asyncio
import time
from bisect import bisect_right

import structlog

from tidemark_protocol import keys
from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.records import peek_header

from .segments import Segment
from .state import NodeState
from .store import Store

log = structlog.get_logger("tidemark.node.gc")

MAX_DELETES = 20_000  # per step, so one GC step never holds the committer long


def gc_horizon(seg: Segment) -> int:
    """Highest materialization boundary at or below PGMRPL."""
    bounds = seg.boundaries
    limit = seg.pgmrpl
    pinned = seg.pin_limit()  # a snapshot being served or used for a rebuild
    if pinned is not None:
        limit = min(limit, pinned)
    i = bisect_right(bounds, limit)
    return bounds[i - 1] if i else 0


def version_garbage(store: Store, pg: int, horizon: int) -> list[bytes]:
    """Blocking: V keys below each page's latest version <= horizon."""
    prefix = keys.pg_prefix(b"V", pg)
    garbage: list[bytes] = []
    cur_page = -1
    below: list[bytes] = []  # this page's versions <= horizon, ascending
    for key in store.scan_keys(prefix, keys.prefix_end(prefix)):
        page, lsn = keys.page_lsn(key)
        if page != cur_page:
            garbage.extend(below[:-1])
            below = []
            cur_page = page
        if lsn <= horizon:
            below.append(key)
        if len(garbage) >= MAX_DELETES:
            break
    garbage.extend(below[:-1])
    return garbage


def log_garbage(store: Store, pg: int, after: int, upto: int) -> tuple[list[bytes], int, int]:
    """Blocking: L and X keys of records in (after, upto]; returns keys, count, last LSN."""
    garbage: list[bytes] = []
    count = 0
    last = after
    end = keys.log_key(pg, upto) + b"\0"
    for key, raw in store.scan(keys.log_key(pg, after + 1), end, MAX_DELETES):
        lsn = keys.log_lsn(key)
        garbage.append(key)
        try:
            garbage.append(keys.index_key(pg, peek_header(raw).page, lsn))
        except MalformedFrame:
            pass  # a mangled header: the L key still goes, its index entry is orphaned
        count += 1
        last = lsn
    if count < MAX_DELETES:
        last = upto
    return garbage, count, last


def peer_hold(state: NodeState, seg: Segment, now: float) -> int:
    """The lowest SCL of a fellow member still catching up: its SCL moved within
    gc_peer_hold seconds and it still needs records we hold (above our log GC point).
    Found on kind: a zone back after 30 s found its peers' log gone (the LSN tail is
    void once a new writer's epoch jumps the LSNs) and never caught up, while it
    counted as healthy, so the next zone loss stopped every write."""
    hold = 1 << 63
    for name in seg.membership.all_members:
        seen = state.peer_progress.get((seg.pg, name))
        if name == state.name or seen is None:
            continue
        scl, moved = seen
        if scl < seg.durable_scl and scl >= seg.log_gc_lsn and now - moved <= state.settings.gc_peer_hold:
            hold = min(hold, scl)
    return hold


async def gc_segment(state: NodeState, seg: Segment) -> int:
    loop = asyncio.get_running_loop()
    deleted = 0
    horizon = gc_horizon(seg)
    if horizon > seg.gc_lsn:
        garbage = await loop.run_in_executor(
            state.reader, version_garbage, state.store, seg.pg, horizon
        )
        seg.gc_lsn = horizon  # refuse reads below it from now on
        await state.committer.submit([seg], deletes=garbage)
        deleted += len(garbage)
    cutoff = min(seg.gc_lsn, seg.meta.floor, seg.durable_scl - state.settings.gc_log_tail,
                 peer_hold(state, seg, time.monotonic()))
    holds = state.backup_holds  # backup: log not yet in the bucket stays
    if holds is not None:
        cutoff = min(cutoff, holds.get(seg.pg, 0))
    if cutoff > seg.log_gc_lsn:
        garbage, count, last = await loop.run_in_executor(
            state.reader, log_garbage, state.store, seg.pg, seg.log_gc_lsn, cutoff
        )
        if seg.deleted:
            return deleted
        seg.log_gc_lsn = last
        seg.records -= count
        await state.committer.submit([seg], deletes=garbage)
        deleted += len(garbage)
    if deleted:
        state.telemetry.gc_deleted.add(deleted)
    return deleted


async def gc_loop(state: NodeState) -> None:
    while True:
        await asyncio.sleep(state.settings.gc_interval)
        for seg in list(state.segments.values()):
            if seg.hydrating():
                continue
            try:
                await gc_segment(state, seg)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gc_error", pg=seg.pg)
            await asyncio.sleep(0)
