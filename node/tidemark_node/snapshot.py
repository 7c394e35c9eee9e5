"""Segment page snapshots: the source side of a rebuild (hydration).

`GET /v1/segments/{pg}/snapshot` streams every page's latest version at or below the
segment's durable materialized LSN S, so a new segment can start from it instead of
replaying a log that may be garbage-collected below S.

Consistency: versions at or below S never change except by GC, so the snapshot pins S
(GC's horizon may not pass it) for the stream and a lease after it (the rebuilding node
then fetches the log above S). S is read from the meta on disk, which is written in the
same batch as the versions it covers. If a GC step that started before the pin moved
the horizon above S, the stream ends with an error instead of a wrong page.

Stream format 2 (all integers little-endian; `?format=2`, the default and the only one):
    header   b"TMSN" | u32 json_len | json | u32 crc32c(everything before it)
             json: format (2), pg, snapshot_lsn (S), base_lsn (B), pages, page_size,
                   est_bytes, log_records_above, scl, source, meta (segment meta JSON)
    frames   b"F" | u32 entries | u32 body_len | body | u32 crc32c(b"F"...body), of about
             2 MiB, so the receiver reads, checks and stores a frame at a time; body =
             entries, each
                 b"P" | u64 page | u64 version_lsn | u32 len | value
                 value = u32 crc32c(image) | image   (exactly as stored; CRC end to end)
             or  b"B" | u64 page | u64 version_lsn   no stored version: fetch this page
                 at read point B from another segment
             The frame CRC also covers the page numbers and LSNs, which the per-page CRC
             does not. The source sends stored values without checking them first: the
             receiver checks every page's CRC and fetches a bad one from another
             segment, as it would for "B".
    trailer  b"E" | u64 pages | u64 snapshot_lsn | u64 base_lsn | u32 crc32c(b"E"...)
             or b"X" | u32 len | utf-8 message  (the source gave up: discard all)
(Format 1, unframed entries with a source-side CRC check, had no reader left.)

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
from concurrent.futures import ThreadPoolExecutor

import google_crc32c
import structlog
from aiohttp import web
from rocksdict import ReadOptions

from tidemark_protocol import keys
from tidemark_protocol.hydration import HydrationState
from tidemark_protocol.records import crc32c

from .httputil import error, segment_of
from .segments import Segment
from .state import STATE, NodeState
from .store import Store

log = structlog.get_logger("tidemark.node.snapshot")

MAGIC = b"TMSN"
FORMAT_FRAMED = 2
ENTRY = struct.Struct("<QQI")  # page, version lsn, value length
BAD = struct.Struct("<QQ")
_P_ENTRY = struct.Struct("<cQQI")  # b"P" + ENTRY
TRAILER = struct.Struct("<QQQ")
FRAME = struct.Struct("<II")  # entries, body length (after the b"F" tag)
U32 = struct.Struct("<I")
PIN_LEASE = 120.0  # seconds a served snapshot keeps S pinned after the stream ends
FRAME_BYTES = 2 << 20  # format 2: page bytes per frame (fewer, larger steps per byte)
PREFETCH = 3  # frames being read from RocksDB: the next one to send and those after it
MAX_FRAME_BODY = 64 << 20  # a receiver refuses frames claiming more (corrupt length)
_tokens = itertools.count(1)
# Snapshot reads get their own threads: the node's reader pool also runs the
# materializer and GC scans, and a stream step queued behind those stalls the copy.
_POOL = ThreadPoolExecutor(2, thread_name_prefix="snapshot")


def list_pages(store: Store, pg: int, at: int) -> list[tuple[int, int]]:
    """Blocking: (page, lsn) of each page's latest version <= `at`, ascending by page.

    One forward pass: versions of a page are adjacent and ascending by LSN, so the last
    one <= `at` seen before the page changes is the answer; a version above `at` skips
    to the next page with one seek (pages rarely hold more than a few versions)."""
    prefix = keys.pg_prefix(b"V", pg)
    ro = ReadOptions()
    ro.set_iterate_upper_bound(keys.prefix_end(prefix))
    it = store.db.iter(ro)
    out: list[tuple[int, int]] = []
    cur_page = cur_lsn = -1
    it.seek(prefix)
    while it.valid():
        page, lsn = keys.page_lsn(it.key())
        if lsn <= at:
            if page != cur_page and cur_page >= 0:
                out.append((cur_page, cur_lsn))
            cur_page, cur_lsn = page, lsn
            it.next()
        else:
            it.seek(keys.page_prefix(b"V", pg, page + 1))
    if cur_page >= 0:
        out.append((cur_page, cur_lsn))
    return out


def encode_frame(store: Store, pg: int, pages: list[tuple[int, int]]) -> tuple[bytes, int]:
    """Blocking: one frame holding the entries for `pages` (one multi-get); returns it
    and how many pages had no stored version ("B" entries). Values are sent unchecked:
    the receiver checks every page's CRC and fetches a bad one elsewhere."""
    values = store.db.get([keys.version_key(pg, page, lsn) for page, lsn in pages])
    parts: list[bytes] = []
    bad = 0
    for (page, lsn), value in zip(pages, values, strict=True):
        if value is not None:
            parts.append(_P_ENTRY.pack(b"P", page, lsn, len(value)))
            parts.append(value)  # joined once below: no per-page concatenation copy
        else:
            bad += 1
            parts.append(b"B" + BAD.pack(page, lsn))
    body = b"".join(parts)
    head = b"F" + FRAME.pack(len(pages), len(body))
    return head + body + U32.pack(google_crc32c.extend(google_crc32c.value(head), body)), bad


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
    state: NodeState = request.app[STATE]
    seg = segment_of(state, request)
    if request.query.get("format", str(FORMAT_FRAMED)) != str(FORMAT_FRAMED):
        return error(400, "malformed", f"format must be {FORMAT_FRAMED}")
    fmt = FORMAT_FRAMED
    if seg.hydrating() or seg.hydration_state() == HydrationState.FAILED:
        # A failed rebuild may hold partial pages: never a source for another one.
        return web.json_response({"error": "not_complete", "message": f"pg {seg.pg} is itself hydrating "
                                  f"or its rebuild failed"}, status=409)
    loop = asyncio.get_running_loop()
    # Pin first (at the in-memory materialized LSN, which is >= the durable one), then
    # read S from disk: GC cannot move its horizon above S from here on.
    token = pin(seg, seg.materialized_lsn)
    try:
        s = await loop.run_in_executor(_POOL, durable_materialized, state.store, seg.pg)
        seg.pins[token] = (s, None)
        if seg.gc_lsn > s:
            return web.json_response({"error": "below_horizon",
                                      "message": f"pg {seg.pg}: GC horizon {seg.gc_lsn} > snapshot {s}"},
                                     status=409)
        pages = await loop.run_in_executor(_POOL, list_pages, state.store, seg.pg, s)
        base = max((lsn for _p, lsn in pages), default=0)
        un = seg.unmaterialized
        above = len(un) - bisect_right(un, s)
        page_size = seg.layout.page_size
        info = {
            "format": fmt, "pg": seg.pg, "snapshot_lsn": s, "base_lsn": base,
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
        await resp.write(head + U32.pack(crc32c(head)))
        step = max(1, FRAME_BYTES // page_size)
        steps = [pages[i : i + step] for i in range(0, len(pages), step)]
        bad_total = 0
        failure = None
        ahead: list[asyncio.Future] = []
        try:
            # Read the next frames while this one is on the wire: disk and network overlap.
            for k in range(len(steps)):
                while len(ahead) < PREFETCH and k + len(ahead) < len(steps):
                    ahead.append(loop.run_in_executor(_POOL, encode_frame, state.store, seg.pg,
                                                      steps[k + len(ahead)]))
                chunk, bad = await ahead.pop(0)
                if seg.deleted:
                    break
                bad_total += bad
                await resp.write(chunk)
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client went away
        except Exception as exc:  # the headers are out: say it in the stream
            log.exception("snapshot_failed", pg=seg.pg)
            failure = repr(exc)
        finally:
            for fut in ahead:
                fut.cancel()
        if failure or seg.deleted or seg.gc_lsn > s:
            why = failure or "deleted or GC moved past it"
            msg = f"pg {seg.pg}: snapshot at {s} failed: {why}".encode()
            await resp.write(b"X" + U32.pack(len(msg)) + msg)
        else:
            tail = b"E" + TRAILER.pack(len(pages), s, base)
            await resp.write(tail + U32.pack(crc32c(tail)))
        await resp.write_eof()
        log.info("snapshot_served", pg=seg.pg, snapshot_lsn=s, base_lsn=base, pages=len(pages),
                 bad=bad_total, format=fmt, peer=request.remote)
        return resp
    finally:
        release(seg, token)
