"""Background materialization: coalesce records <= min(durable SCL, VDL hint) into page
versions, one new version per touched page per chunk (not per record). No checkpoints,
no full-page writes: a version is just the page after all its records <= that LSN.

A chunk ends at a boundary B such that every record of the PG <= B is materialized;
GC may only cut at such boundaries (see gc.py).
"""

from __future__ import annotations

import asyncio
from bisect import bisect_right

import structlog

from tidemark_protocol.errors import ProtocolError
from tidemark_protocol.pages import apply_redo, empty_page
from tidemark_protocol.records import decode_one

from . import store as keys
from .reads import encode_version, latest_version
from .segments import Segment
from .state import NodeState
from .store import Store

log = structlog.get_logger("tidemark.node.materialize")

MAX_BOUNDARIES = 256


def build_chunk(
    store: Store, seg_pg: int, page_size: int, lsns: list[int]
) -> tuple[list[tuple[bytes, bytes]], int | None]:
    """Blocking. Returns version puts for records `lsns`, or the first corrupt LSN."""
    pages: dict[int, tuple[int, bytearray | bytes]] = {}
    base_cache: dict[int, bytes] = {}
    for lsn in lsns:
        raw = store.get(keys.log_key(seg_pg, lsn))
        if raw is None:
            continue  # dropped by a seal after we picked the chunk
        try:
            record = decode_one(raw)
        except ProtocolError:
            return [], lsn
        page = record.page
        if page in pages:
            image = pages[page][1]
        else:
            if page not in base_cache:
                found = latest_version(store, seg_pg, page, lsn - 1)
                base_cache[page] = found[1] if found else empty_page(page_size)
            image = base_cache[page]
        pages[page] = (lsn, apply_redo(image, record, page_size))
    puts = [
        (keys.version_key(seg_pg, page, lsn), encode_version(image))
        for page, (lsn, image) in pages.items()
    ]
    return puts, None


async def materialize_segment(state: NodeState, seg: Segment) -> int:
    """One chunk for one segment; returns how many records were coalesced."""
    target = seg.materialize_target()
    if seg.corrupt_lsn is not None or target <= seg.materialized_lsn:
        return 0
    un = seg.unmaterialized
    n = bisect_right(un, target)
    limit = state.settings.materialize_chunk
    if n > limit:
        lsns = list(un[:limit])
        boundary = lsns[-1]
    else:
        lsns = list(un[:n])
        boundary = target
    loop = asyncio.get_running_loop()
    try:
        puts, corrupt = await loop.run_in_executor(
            state.reader, build_chunk, state.store, seg.pg, seg.layout.page_size, lsns
        )
    except ProtocolError as exc:  # a redo that does not apply: treat like corruption
        log.error("materialize_failed", pg=seg.pg, error=str(exc))
        seg.corrupt_lsn = lsns[0] if lsns else boundary
        return 0
    if corrupt is not None:
        seg.corrupt_lsn = corrupt
        state.telemetry.corrupt.add(1)
        log.error("corrupt_record", pg=seg.pg, lsn=corrupt, during="materialize")
        return 0
    if seg.deleted or boundary <= seg.materialized_lsn:
        return 0
    seg.materialized_lsn = boundary
    cut = bisect_right(seg.unmaterialized, boundary)
    del seg.unmaterialized[:cut]
    seg.boundaries.append(boundary)
    if len(seg.boundaries) > MAX_BOUNDARIES:
        del seg.boundaries[: len(seg.boundaries) - MAX_BOUNDARIES]
    await state.committer.submit([seg], puts=puts)
    state.telemetry.materialized.add(len(lsns))
    return len(lsns)


async def materialize_loop(state: NodeState) -> None:
    interval = state.settings.materialize_interval
    loop = asyncio.get_running_loop()
    retry_at: dict[int, float] = {}  # pg -> when to try again after an unexpected error
    while True:
        busy = False
        for seg in list(state.segments.values()):
            if retry_at.get(seg.pg, 0.0) > loop.time():
                continue
            try:
                if await materialize_segment(state, seg):
                    busy = True
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("materialize_error", pg=seg.pg)
                retry_at[seg.pg] = loop.time() + 5.0
            await asyncio.sleep(0)  # yield to the foreground between chunks
        await asyncio.sleep(0.01 if busy else interval)
