"""Segment page snapshots: the source side of a rebuild (hydration).

`GET /v1/segments/{pg}/snapshot` streams every page's latest version at or below the
segment's durable materialized LSN S, so a new segment can start from it instead of
replaying a log that may be garbage-collected below S.

Consistency: versions at or below S never change except by GC, so the snapshot pins S
(GC's horizon may not pass it) for the stream and a lease after it (the rebuilding node
then fetches the log above S). S is read from the meta on disk, which is written in the
same batch as the versions it covers. If a GC step that started before the pin moved
the horizon above S, the stream ends with an error instead of a wrong page.

Stream format (all integers little-endian):
    header   b"TMSN" | u32 json_len | json | u32 crc32c(everything before it)
             json: format, pg, snapshot_lsn (S), base_lsn (B), pages, page_size,
                   est_bytes, log_records_above, scl, source, meta (segment meta JSON)
    entries  b"P" | u64 page | u64 version_lsn | u32 len | value
             value = u32 crc32c(image) | image   (exactly as stored; CRC end to end)
             b"B" | u64 page | u64 version_lsn   the stored version failed its CRC:
             fetch this page at read point B from another segment
    trailer  b"E" | u64 pages | u64 snapshot_lsn | u64 base_lsn | u32 crc32c(b"E"...)
             or b"X" | u32 len | utf-8 message  (the source gave up: discard all)

B (base_lsn) is the PG's last record at or below S: the highest version LSN (every
record <= S is covered by a version at or below S, keyed by the page's last record).
A new segment's chain starts at floor = SCL = B: the next record of the PG links to B.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import struct
import time
from bisect import bisect_right

import structlog
from aiohttp import web
from rocksdict import ReadOptions

from tidemark_protocol.errors import CorruptRecord

from . import store as keys
from .reads import decode_version
from .segments import Segment
from .state import NodeState
from .store import Store

log = structlog.get_logger("tidemark.node.snapshot")

MAGIC = b"TMSN"
FORMAT = 1
ENTRY = struct.Struct("<QQI")  # page, version lsn, value length
BAD = struct.Struct("<QQ")
TRAILER = struct.Struct("<QQQ")
U32 = struct.Struct("<I")
PIN_LEASE = 120.0  # seconds a served snapshot keeps S pinned after the stream ends
PAGES_PER_STEP = 256
_tokens = itertools.count(1)


def list_pages(store: Store, pg: int, at: int) -> list[tuple[int, int]]:
    """Blocking: (page, lsn) of each page's latest version <= `at`, ascending by page."""
    prefix = keys.pg_prefix(b"V", pg)
    ro = ReadOptions()
    ro.set_iterate_upper_bound(keys.prefix_end(prefix))
    it = store.db.iter(ro)
    out: list[tuple[int, int]] = []
    it.seek(prefix)
    while it.valid():
        page, _lsn = keys.page_lsn(it.key())
        it.seek_for_prev(keys.version_key(pg, page, at))
        if it.valid() and it.key().startswith(keys.page_prefix(b"V", pg, page)):
            out.append((page, keys.page_lsn(it.key())[1]))
        it.seek(keys.page_prefix(b"V", pg, page + 1))
    return out


def encode_pages(store: Store, pg: int, pages: list[tuple[int, int]]) -> tuple[bytes, int]:
    """Blocking: entries for `pages`; returns the bytes and how many were bad."""
    parts: list[bytes] = []
    bad = 0
    for page, lsn in pages:
        value = store.get(keys.version_key(pg, page, lsn))
        ok = value is not None
        if ok:
            try:
                decode_version(value, pg, page, lsn)
            except CorruptRecord:
                ok = False
        if ok:
            parts.append(b"P" + ENTRY.pack(page, lsn, len(value)) + value)
        else:
            bad += 1
            parts.append(b"B" + BAD.pack(page, lsn))
    return b"".join(parts), bad


def durable_materialized(store: Store, pg: int) -> int:
    raw = store.get(keys.meta_key(pg))
    if raw is None:
        return 0
    return int(json.loads(raw).get("materialized_lsn", 0))


def pin(seg: Segment, lsn: int, lease: float | None = None) -> int:
    token = next(_tokens)
    seg.pins[token] = (lsn, None if lease is None else time.monotonic() + lease)
    return token


def release(seg: Segment, token: int, lease: float = PIN_LEASE) -> None:
    if token in seg.pins:
        lsn, _ = seg.pins[token]
        seg.pins[token] = (lsn, time.monotonic() + lease)


async def get_snapshot(request: web.Request) -> web.StreamResponse:
    from .app import segment_of  # late: app imports this module
    from .state import STATE

    state: NodeState = request.app[STATE]
    seg = segment_of(state, request)
    if seg.hydrating():
        return web.json_response({"error": "not_complete", "message": f"pg {seg.pg} is itself hydrating"},
                                 status=409)
    loop = asyncio.get_running_loop()
    # Pin first (at the in-memory materialized LSN, which is >= the durable one), then
    # read S from disk: GC cannot move its horizon above S from here on.
    token = pin(seg, seg.materialized_lsn)
    try:
        s = await loop.run_in_executor(state.reader, durable_materialized, state.store, seg.pg)
        seg.pins[token] = (s, None)
        if seg.gc_lsn > s:
            return web.json_response({"error": "below_horizon",
                                      "message": f"pg {seg.pg}: GC horizon {seg.gc_lsn} > snapshot {s}"},
                                     status=409)
        pages = await loop.run_in_executor(state.reader, list_pages, state.store, seg.pg, s)
        base = max((lsn for _p, lsn in pages), default=0)
        un = seg.unmaterialized
        above = len(un) - bisect_right(un, s)
        page_size = seg.layout.page_size
        info = {
            "format": FORMAT, "pg": seg.pg, "snapshot_lsn": s, "base_lsn": base,
            "pages": len(pages), "page_size": page_size,
            "est_bytes": len(pages) * (page_size + 1 + ENTRY.size + 4),
            "log_records_above": above, "scl": seg.durable_scl, "source": state.name,
            "meta": seg.to_json(),
        }
        blob = json.dumps(info, separators=(",", ":")).encode()
        head = MAGIC + U32.pack(len(blob)) + blob
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream",
                                           "X-Tidemark-Snapshot-LSN": str(s),
                                           "X-Tidemark-Base-LSN": str(base)})
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(head + U32.pack(keys_crc(head)))
        bad_total = 0
        failure = None
        try:
            for i in range(0, len(pages), PAGES_PER_STEP):
                if seg.deleted:
                    break
                chunk, bad = await loop.run_in_executor(
                    state.reader, encode_pages, state.store, seg.pg, pages[i : i + PAGES_PER_STEP]
                )
                bad_total += bad
                await resp.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away
        except Exception as exc:  # the headers are out: say it in the stream
            log.exception("snapshot_failed", pg=seg.pg)
            failure = repr(exc)
        if failure or seg.deleted or seg.gc_lsn > s:
            why = failure or "deleted or GC moved past it"
            msg = f"pg {seg.pg}: snapshot at {s} failed: {why}".encode()
            await resp.write(b"X" + U32.pack(len(msg)) + msg)
        else:
            tail = b"E" + TRAILER.pack(len(pages), s, base)
            await resp.write(tail + U32.pack(keys_crc(tail)))
        await resp.write_eof()
        log.info("snapshot_served", pg=seg.pg, snapshot_lsn=s, base_lsn=base, pages=len(pages),
                 bad=bad_total, peer=request.remote)
        return resp
    finally:
        release(seg, token)


def keys_crc(data: bytes) -> int:
    from tidemark_protocol.records import crc32c

    return crc32c(data)
