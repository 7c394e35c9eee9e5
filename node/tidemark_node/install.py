"""Restore install: `POST /v1/segments/{pg}/install?lsn=L&count=N&crc32c=C` loads a page
snapshot at LSN L into a freshly created, EMPTY segment (point-in-time restore).

Body (application/octet-stream, streamed): one RocksDB SST file (SstFileWriter) holding
exactly N entries `V pg page L -> crc32c(image) LE + image` (the node's materialized
page version format, store.py), pages of this PG; C is the crc32c of the whole body.
N = 0: an empty body (the PG has no non-zero page at L).

Why an SST: the restore builds each PG's file ONCE and every member receives the same
bytes; a node only streams them to disk (checking C), verifies the file in a scratch
RocksDB (every key in this PG's range at LSN L, N of them, every image's CRC), then
ingests it in one step — no per-page writes, WAL, memtable or compaction churn;
ingestion syncs the file and the manifest. Nothing is installed unless every check
passes.

Then the segment is re-based at L like a hydrated segment's snapshot phase
(Segment.rebase, SegmentLog.rebase): floor = SCL = VDL hint = materialized = GC horizons = L, no log
records. A recovering writer then finds every PG's tail at L and the volume's VDL at L
(recovery.plan_recovery), and reads at any R >= L see exactly the installed pages.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid

import google_crc32c
import structlog
from aiohttp import web
from rocksdict import IngestExternalFileOptions, Options, Rdict

from tidemark_protocol import keys
from tidemark_protocol.errors import MalformedFrame, ProtocolError
from tidemark_protocol.hydration import HydrationState

from .httputil import int_param, segment_of
from .segments import Segment
from .state import STATE, NodeState

log = structlog.get_logger("tidemark.node.install")


class NotEmpty(ProtocolError):
    code = "segment_not_empty"


def _check_empty(seg: Segment) -> None:
    m = seg.meta
    if (seg.durable_scl or seg.log.max_lsn or seg.records or m.floor or seg.materialized_lsn
            or seg.hydration is not None or m.truncations):
        raise NotEmpty(f"pg {seg.pg} already holds data (scl={seg.durable_scl}, floor={m.floor}, "
                       f"records={seg.records}): install needs a freshly created segment")


def _installed_at(seg: Segment, lsn: int) -> bool:
    """Installed at `lsn` and untouched since (no writer has opened the volume: a
    writer's recovery adds a truncation range to every segment)."""
    m = seg.meta
    return (m.floor == lsn == seg.durable_scl == seg.materialized_lsn and seg.log.max_lsn == lsn
            and not seg.records and not m.truncations and seg.hydration is None)


def verify_sst(path: str, scratch: str, pg: int, lsn: int, first: int, last: int, count: int) -> None:
    """Open the file in a scratch RocksDB and check every entry (blocking: a thread).
    The file itself is left in place (ingested by hard link, then the scratch DB goes)."""
    os.makedirs(scratch)
    link = os.path.join(scratch, "check.sst")
    os.link(path, link)
    db = Rdict(os.path.join(scratch, "db"), Options(raw_mode=True))
    try:
        opts = IngestExternalFileOptions()
        opts.set_move_files(True)
        try:
            db.ingest_external_file([link], opts)
        except Exception as exc:  # not an SST at all, or a damaged one
            raise MalformedFrame(f"install body is not a valid SST file: {exc}") from exc
        n, prev = 0, -1
        it = db.iter()
        it.seek_to_first()
        while it.valid():
            key, value = it.key(), it.value()
            try:
                kpg, page, klsn = keys.parse_version_key(key)
            except ValueError as exc:
                raise MalformedFrame(f"unexpected key {key[:32]!r} in the install file") from exc
            if kpg != pg or klsn != lsn or not first <= page <= last or page <= prev:
                raise MalformedFrame(f"key V/{kpg}/{page}/{klsn} is not a page of pg {pg} at lsn {lsn}")
            if not keys.version_crc_ok(value):
                raise MalformedFrame(f"page {page}: crc32c mismatch")
            prev = page
            n += 1
            it.next()
        del it
        if n != count:
            raise MalformedFrame(f"install file holds {n} pages, {count} announced")
    finally:
        db.close()


async def post_install(request: web.Request) -> web.Response:
    state: NodeState = request.app[STATE]
    seg = segment_of(state, request)
    lsn = int_param(request, "lsn")
    count = int_param(request, "count")
    want_crc = int_param(request, "crc32c")
    lay = seg.layout
    if lsn <= 0:
        raise MalformedFrame("lsn must be > 0")
    if count > lay.pages_per_pg:
        raise MalformedFrame(f"count {count} exceeds the PG's {lay.pages_per_pg} pages")
    if _installed_at(seg, lsn):  # a retried restore: this PG is already in place
        async for _chunk in request.content.iter_any():
            pass
        return web.json_response({"pg": seg.pg, "lsn": lsn, "pages": count, "scl": seg.durable_scl,
                                  "already": True})
    _check_empty(seg)
    seg.hydration = {"state": HydrationState.INSTALLING, "bytes": 0, "total_bytes": 0, "pct": 0.0, "error": None}
    work = os.path.join(state.store.path.rstrip("/") + "-install", uuid.uuid4().hex)
    os.makedirs(work)
    path = os.path.join(work, f"pg{seg.pg}.sst")
    first = seg.pg * lay.pages_per_pg
    t0 = time.perf_counter()
    try:
        crc = size = 0
        with open(path, "wb") as out:  # page-cache writes; ingestion syncs the file
            async for chunk in request.content.iter_any():
                crc = google_crc32c.extend(crc, chunk)
                size += len(chunk)
                out.write(chunk)
        seg.hydration["bytes"] = size
        if crc != want_crc:
            raise MalformedFrame(f"body crc32c {crc} != {want_crc}: damaged in transit")
        t_recv = time.perf_counter() - t0
        if count:
            await asyncio.to_thread(verify_sst, path, os.path.join(work, "scratch"), seg.pg, lsn,
                                    first, first + lay.pages_per_pg - 1, count)
        elif size:
            raise MalformedFrame("count=0 needs an empty body")
        t_verify = time.perf_counter() - t0 - t_recv
        if seg.deleted or seg.log.max_lsn or seg.records:
            raise NotEmpty(f"pg {seg.pg} was deleted or received records during the install")
        # An earlier install interrupted after its ingest (before its meta) may have
        # left versions of this PG: they would show through pages this one leaves zero.
        wipe = [(keys.pg_prefix(t, seg.pg), keys.prefix_end(keys.pg_prefix(t, seg.pg))) for t in (b"V", b"L", b"X")]
        await state.committer.submit([], ranges=wipe)
        if count:
            await asyncio.to_thread(state.store.ingest, [path])  # durable when it returns
        # An empty segment now holds the PG as of L: no log, everything <= L durable.
        deletes = seg.rebase(state.store, lsn, vdl_hint=lsn)
        await state.committer.submit([seg], deletes=deletes)  # the meta (floor = SCL = L), synced
        seconds = {"receive": round(t_recv, 3), "verify": round(t_verify, 3),
                   "total": round(time.perf_counter() - t0, 3)}
    except BaseException:
        seg.hydration = None
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    seg.hydration = None
    log.info("segment_installed", pg=seg.pg, lsn=lsn, pages=count, bytes=size, seconds=seconds)
    return web.json_response({"pg": seg.pg, "lsn": lsn, "pages": count, "scl": seg.durable_scl,
                              "seconds": seconds})
