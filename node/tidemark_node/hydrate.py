"""Segment hydration (rebuild): fill a freshly created segment from its peers.

`POST /v1/segments/{pg}/hydrate` starts a background task on a segment just created
with the new membership (`PUT /v1/segments/{pg}`):

1. snapshot: stream a page snapshot at S (snapshot.py, format 2: ~2 MiB CRC-checked
   frames) from one source; every page version is CRC-checked and written, in the
   order received (ascending keys), into one SST file that is ingested into RocksDB at
   the end (atomic, durable; no WAL/memtable/compaction pass per page); a bad one is
   fetched from another source as a page read at the snapshot's base B. Then the
   segment's chain is re-based: floor = SCL = B (the PG's last record <= S),
   materialized = GC horizons = B.
2. log: the records in (S, T] (T = lowest SCL among the usable sources) are fetched
   from SEVERAL sources in parallel: the LSN range is split into chunks that workers
   (one per source) take in order, each preferring its own source; a chunk a source
   cannot serve (error, refusal, bad CRC in transit, `X-Tidemark-Corrupt-LSN`) is
   re-fetched from the next source. Records go through intake's `ingest`: accepted into
   the chain (records from the writer meanwhile wait in `pending` and link as the gaps
   fill) and synced before they count.
3. catching_up: pull from the most advanced peer until the SCL reaches what the peers
   had when this phase began; then `done`. Gossip takes over from there.

A token bucket (ratelimit.py) caps the bytes per second over all of it. While the
segment is in `snapshot` or `log`, gossip, GC and the scrubber skip it; the writer's
frames are accepted throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import time
from array import array

import aiohttp
import google_crc32c
import structlog
from aiohttp import web

from tidemark_protocol.errors import MalformedFrame, ProtocolError
from tidemark_protocol.records import crc32c
from tidemark_protocol.segment import SegmentLog, SegmentMeta, in_ranges

from . import snapshot as snap
from . import store as keys
from .intake import decode_raw_records, ingest
from .ratelimit import TokenBucket
from .reads import encode_version
from .segments import Segment, drop_keys, peek_header
from .state import NodeState

log = structlog.get_logger("tidemark.node.hydrate")

AVG_RECORD_GUESS = 128
RUNNING = ("snapshot", "log", "catching_up")
_READ_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=3, sock_read=30)
_loads = itertools.count(1)
QUEUE_FRAMES = 2  # frames read ahead of the parser (each up to snapshot.FRAME_BYTES)


class SourceError(Exception):
    """One source could not serve a piece; another may."""


class HydrationError(Exception):
    pass


class Progress:
    """The `hydration` dict shown in /v1/status, plus the estimate behind `total_bytes`."""

    def __init__(self, seg: Segment, sources: dict[str, str], bandwidth: int) -> None:
        self.h = {
            "state": "snapshot", "bytes": 0, "total_bytes": 0, "pct": 0.0, "error": None,
            "sources": sorted(sources), "bandwidth_bytes_per_s": bandwidth,
            "snapshot_lsn": None, "base_lsn": None, "target_lsn": None,
            "pages": 0, "records": 0, "refetched": 0, "started_at": time.time(),
            "seconds": 0.0, "phase_seconds": {},
        }
        seg.hydration = self.h
        self.t0 = time.monotonic()
        self.t_phase = self.t0
        self.snapshot_bytes = 0
        self.log_bytes = 0
        self.log_records = 0
        self.log_records_est = 0

    def add(self, n: int, log_records: int = 0) -> None:
        self.h["bytes"] += n
        if log_records:
            self.log_bytes += n
            self.log_records += log_records
            self.h["records"] = self.log_records
        self.update()

    def update(self) -> None:
        avg = self.log_bytes / self.log_records if self.log_records else AVG_RECORD_GUESS
        remaining = max(0, self.log_records_est - self.log_records) * avg
        total = max(self.h["bytes"], int(self.snapshot_bytes + self.log_bytes + remaining))
        self.h["total_bytes"] = total
        self.h["pct"] = round(min(99.9, 100.0 * self.h["bytes"] / total), 1) if total else 0.0
        self.h["seconds"] = round(time.monotonic() - self.t0, 3)

    def phase(self, name: str) -> None:
        now = time.monotonic()
        self.h["phase_seconds"][self.h["state"]] = round(now - self.t_phase, 3)
        self.t_phase = now
        self.h["state"] = name
        log.info("hydration_phase", state=name, bytes=self.h["bytes"])


# -- HTTP -----------------------------------------------------------------------------
async def post_hydrate(request: web.Request) -> web.Response:
    from .app import TASKS, read_json, segment_of
    from .state import STATE

    state: NodeState = request.app[STATE]
    seg = segment_of(state, request)
    body = await read_json(request)
    sources = body.get("sources")
    if not isinstance(sources, dict) or not sources or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
    ):
        raise MalformedFrame("sources must map at least one node name to its URL")
    try:
        bandwidth = int(body.get("bandwidth_bytes_per_s", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise MalformedFrame("bandwidth_bytes_per_s must be an integer") from exc
    if bandwidth < 0:
        raise MalformedFrame("bandwidth_bytes_per_s must be >= 0")
    sources = {k: v.rstrip("/") for k, v in sources.items() if k != state.name}
    if not sources:
        raise MalformedFrame("sources must name at least one other node")
    if seg.hydration is not None and seg.hydration.get("state") in RUNNING:
        return web.json_response({"error": "hydration_running", "message": f"pg {seg.pg} is hydrating",
                                  "hydration": seg.hydration}, status=409)
    if seg.hydration is not None and seg.hydration.get("state") == "done" and not body.get("force"):
        # Idempotent for a repairer resuming after a restart: the rebuild already finished.
        return web.json_response({"pg": seg.pg, "hydration": seg.hydration}, status=200)
    progress = Progress(seg, sources, bandwidth)
    task = asyncio.get_running_loop().create_task(hydrate(state, seg, sources, bandwidth, progress),
                                                  name=f"hydrate-{seg.pg}")
    tasks = request.app[TASKS]
    tasks[:] = [t for t in tasks if not t.done()]
    tasks.append(task)
    log.info("hydration_started", pg=seg.pg, sources=sorted(sources), bandwidth=bandwidth)
    return web.json_response({"pg": seg.pg, "hydration": seg.hydration}, status=202)


# -- the task ---------------------------------------------------------------------------
async def hydrate(state: NodeState, seg: Segment, sources: dict[str, str], bandwidth: int,
                  progress: Progress) -> None:
    bucket = TokenBucket(bandwidth)
    try:
        await state.committer.submit([seg])  # the meta says "hydrating" (see load_segment)
        async with aiohttp.ClientSession() as session:
            # The snapshot from the most materialized source first (stable: given order).
            statuses = await _statuses(session, seg, sources)
            ranked = sorted(sources, key=lambda n: (n not in statuses,
                                                    -int(statuses.get(n, {}).get("materialized_lsn", 0))))
            ordered = {n: sources[n] for n in ranked}
            info = await fetch_snapshot_any(state, session, seg, ordered, bucket, progress)
            progress.phase("log")
            await fetch_log(state, session, seg, sources, bucket, progress, info)
            progress.phase("catching_up")
            await catch_up(state, session, seg, sources, bucket, progress, info)
        progress.h["total_bytes"] = progress.h["bytes"]
        progress.h["pct"] = 100.0
        progress.h["seconds"] = round(time.monotonic() - progress.t0, 3)
        progress.phase("done")
        if not seg.deleted:
            await state.committer.submit([seg])
        log.info("hydration_done", pg=seg.pg, scl=seg.durable_scl, bytes=progress.h["bytes"],
                 seconds=progress.h["seconds"], throttled=round(bucket.waited, 3))
    except asyncio.CancelledError:
        progress.h.update(state="failed", error="cancelled")
        raise
    except Exception as exc:
        progress.h.update(state="failed", error=f"{type(exc).__name__}: {exc}")
        log.error("hydration_failed", pg=seg.pg, error=repr(exc))


def _check_live(seg: Segment) -> None:
    if seg.deleted:
        raise HydrationError(f"pg {seg.pg} was deleted")


async def _flush(state: NodeState, seg: Segment, puts: list) -> None:
    if puts:
        _check_live(seg)
        await state.committer.submit([], puts=list(puts))
        puts.clear()


async def fetch_snapshot_any(state, session, seg, sources, bucket, progress) -> dict:
    errors = []
    for name, url in sources.items():
        try:
            return await fetch_snapshot(state, session, seg, name, url, sources, bucket, progress)
        except (SourceError, aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError,
                ValueError, KeyError) as exc:
            errors.append(f"{name}: {exc!r}")
            log.warning("snapshot_source_failed", pg=seg.pg, source=name, error=repr(exc))
            _check_live(seg)
    raise HydrationError("no source could serve a snapshot: " + "; ".join(errors))


def _read_chunk(bucket: TokenBucket) -> int:
    """Bytes per network read: a whole frame when uncapped; ~0.1 s of the rate when
    capped, so the cap (and the progress shown) stays smooth within a large frame."""
    return 0 if bucket.rate <= 0 else max(16 << 10, min(snap.FRAME_BYTES, bucket.rate // 10))


async def _read_paced(rd, n: int, bucket: TokenBucket, progress: Progress) -> bytes:
    step = _read_chunk(bucket)
    if not step or n <= step:
        data = await rd.readexactly(n)
        await bucket.consume(n)
        progress.add(n)
        return data
    parts = []
    left = n
    while left:
        k = min(step, left)
        parts.append(await rd.readexactly(k))
        await bucket.consume(k)
        progress.add(k)
        left -= k
    return b"".join(parts)


def parse_frame(body: bytes, count: int, seg_pg: int, layout, base: int, put) -> tuple[int, list]:
    """Blocking (an executor thread): check one format-2 frame body's entries and hand
    each good page version to `put(key, value)`. Returns (good, bad pieces)."""
    unpack = snap.ENTRY.unpack_from
    esize = snap.ENTRY.size
    bad: list[tuple[int, int]] = []
    good = 0
    off = 0
    end = len(body)
    for _ in range(count):
        if off >= end:
            raise SourceError("snapshot: frame shorter than its entry count")
        tag = body[off]
        off += 1
        if tag == 0x50:  # b"P"
            if end - off < esize:
                raise SourceError("snapshot: entry header truncated")
            page, lsn, n = unpack(body, off)
            off += esize
            if end - off < n:
                raise SourceError("snapshot: entry value truncated")
            if layout.pg_of(page) != seg_pg or lsn > base:
                raise SourceError(f"snapshot: page {page}@{lsn} outside pg {seg_pg} / base {base}")
            value = body[off : off + n]
            off += n
            if n < 4 or crc32c(value[4:]) != int.from_bytes(value[:4], "little"):
                bad.append((page, lsn))  # the source's copy is bad: fetch elsewhere
                continue
            put(keys.version_key(seg_pg, page, lsn), value)
            good += 1
        elif tag == 0x42:  # b"B"
            if end - off < snap.BAD.size:
                raise SourceError("snapshot: bad-entry truncated")
            bad.append(snap.BAD.unpack_from(body, off))
            off += snap.BAD.size
        else:
            raise SourceError(f"snapshot: unknown entry tag {tag:#x}")
    if off != end:
        raise SourceError("snapshot: frame longer than its entries")
    return good, bad


class _Loader:
    """Turns the snapshot's frames into one SST file, then ingests it.

    Why: put through the WAL and memtable, every page would be written three times
    (WAL, flush, compaction) at ~3x the CPU; the snapshot's keys arrive in ascending
    order (pages ascending, one version each), which is what an SST file needs, so the
    file is built as frames arrive (in a thread, one frame at a time, while the next
    frame is read) and moved into RocksDB at the end in one atomic, durable step. A
    source failing midway leaves only a scratch file, deleted here. The ingestion runs
    on the committer's thread so it is ordered with its writes, in particular with a
    DELETE's range delete: it is queued only while the segment is live.
    """

    def __init__(self, state: NodeState, seg: Segment, base: int) -> None:
        self.state = state
        self.seg = seg
        self.base = base
        name = f"pg{seg.pg}-{os.getpid()}-{next(_loads)}.sst"
        self.path = os.path.join(state.store.ingest_dir, name)
        self.sst = None
        # Frames read but not yet parsed: the reader keeps reading while a frame is
        # parsed, so a slow step on either side (a busy machine schedules each process
        # late) does not stall the other.
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.task: asyncio.Task | None = None
        self.good = 0
        self.bad: list[tuple[int, int]] = []

    @staticmethod
    def clear_stale(store, pg: int) -> None:
        """Scratch files of this PG's earlier hydrations (a crash, a failed source)."""
        for name in os.listdir(store.ingest_dir):
            if name.startswith(f"pg{pg}-") and name.endswith(".sst"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(store.ingest_dir, name))

    def _parse(self, body: bytes, count: int) -> tuple[int, list]:
        if self.sst is None:
            self.sst = keys.Store.sst_writer(self.path)
        try:
            return parse_frame(body, count, self.seg.pg, self.seg.layout, self.base,
                               self.sst.__setitem__)
        except SourceError:
            raise
        except Exception as exc:  # e.g. keys out of order: the source's stream is wrong
            raise SourceError(f"snapshot: {exc}") from exc

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while (item := await self.queue.get()) is not None:
            good, bad = await loop.run_in_executor(None, self._parse, *item)
            self.good += good
            self.bad.extend(bad)

    async def _enqueue(self, item) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._consume())
        if not self.queue.full():
            self.queue.put_nowait(item)
        else:
            waiter = asyncio.ensure_future(self.queue.put(item))
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # the consumer stopped: raise its error
                waiter.cancel()
                await self.task
        if self.task.done():
            await self.task  # a bad frame fails the source as soon as it is seen

    async def put(self, body: bytes, count: int) -> None:
        _check_live(self.seg)
        await self._enqueue((body, count))

    async def drain(self) -> None:
        """Wait until every frame put so far is parsed (raises a frame's error)."""
        if self.task is not None:
            await self._enqueue(None)
            task, self.task = self.task, None
            await task

    async def finish(self) -> None:
        """Ingest what was loaded; durable when this returns."""
        await self.drain()
        loop = asyncio.get_running_loop()
        if self.good:
            await loop.run_in_executor(None, self.sst.finish)  # fsyncs the file
        _check_live(self.seg)  # on the loop thread, right before the ingestion is queued
        if self.good:
            await self.state.committer.run_ordered(self.state.store.ingest, [self.path])

    def discard(self) -> None:
        if self.task is not None:
            self.task.cancel()
        with contextlib.suppress(OSError):
            os.remove(self.path)


async def fetch_snapshot(state, session, seg, name, url, sources, bucket, progress) -> dict:
    pg = seg.pg
    params = {"format": str(snap.FORMAT_FRAMED)}
    loader: _Loader | None = None
    try:
        async with session.get(f"{url}/v1/segments/{pg}/snapshot", params=params,
                               timeout=_READ_TIMEOUT) as resp:
            if resp.status != 200:
                raise SourceError(f"snapshot: HTTP {resp.status} {(await resp.read())[:200]!r}")
            rd = resp.content
            head = await rd.readexactly(8)
            if head[:4] != snap.MAGIC:
                raise SourceError("snapshot: bad magic")
            blob = await rd.readexactly(snap.U32.unpack_from(head, 4)[0])
            (crc,) = snap.U32.unpack(await rd.readexactly(4))
            if crc32c(head + blob) != crc:
                raise SourceError("snapshot: header crc32c mismatch")
            info = json.loads(blob)
            if int(info.get("format", 1)) != snap.FORMAT_FRAMED:
                raise SourceError(f"snapshot: source answered format {info.get('format')}, not 2")
            if int(info["pg"]) != pg or int(info["page_size"]) != seg.layout.page_size:
                raise SourceError(f"snapshot: pg/page size mismatch {info['pg']}/{info['page_size']}")
            s, base = int(info["snapshot_lsn"]), int(info["base_lsn"])
            progress.h.update(snapshot_lsn=s, base_lsn=base)
            progress.snapshot_bytes = int(info["est_bytes"])
            progress.log_records_est = int(info.get("log_records_above", 0))
            progress.update()
            nbytes = 8 + len(blob) + 4
            await bucket.consume(nbytes)
            progress.add(nbytes)
            _Loader.clear_stale(state.store, pg)
            loader = _Loader(state, seg, base)
            entries = 0
            while True:
                tag = await rd.readexactly(1)
                if tag == b"F":
                    fhead = await rd.readexactly(snap.FRAME.size)
                    count, blen = snap.FRAME.unpack(fhead)
                    if blen > snap.MAX_FRAME_BODY:
                        raise SourceError(f"snapshot: frame of {blen} bytes")
                    body = await _read_paced(rd, blen + 4, bucket, progress)
                    fcrc = google_crc32c.extend(google_crc32c.value(tag + fhead), body[:-4])
                    if fcrc != int.from_bytes(body[-4:], "little"):
                        raise SourceError("snapshot: frame crc32c mismatch (damaged in transit)")
                    entries += count
                    await loader.put(body[:-4], count)
                elif tag == b"E":
                    tbody = await rd.readexactly(snap.TRAILER.size)
                    (tcrc,) = snap.U32.unpack(await rd.readexactly(4))
                    if crc32c(tag + tbody) != tcrc:
                        raise SourceError("snapshot: trailer crc32c mismatch")
                    count, ts, tb = snap.TRAILER.unpack(tbody)
                    if (count, ts, tb) != (entries, s, base):
                        raise SourceError(f"snapshot: trailer {count, ts, tb} != {entries, s, base}")
                    break
                elif tag == b"X":
                    msg = await rd.readexactly(snap.U32.unpack(await rd.readexactly(4))[0])
                    raise SourceError(f"snapshot aborted by source: {msg.decode(errors='replace')}")
                else:
                    raise SourceError(f"snapshot: unknown frame tag {tag!r}")
            await loader.drain()
        bad = loader.bad
        good = loader.good
        puts: list = []
        others = {k: v for k, v in sources.items() if k != name}
        for page, lsn in bad:
            image = await fetch_page_elsewhere(session, seg, others, page, base, bucket, progress)
            puts.append((keys.version_key(pg, page, lsn), encode_version(image)))
            progress.h["refetched"] += 1
        await _flush(state, seg, puts)  # synced (committer)
        await loader.finish()  # the pages are on disk before the base moves
    finally:
        if loader is not None:
            loader.discard()
    progress.h["pages"] = good + len(bad)
    progress.snapshot_bytes = progress.h["bytes"]
    await install_base(state, seg, info)
    log.info("snapshot_installed", pg=pg, source=name, snapshot_lsn=s, base_lsn=base,
             pages=good + len(bad), refetched=len(bad), scl=seg.durable_scl)
    return info | {"source_name": name}


async def fetch_page_elsewhere(session, seg, sources, page, at, bucket, progress) -> bytes:
    for name, url in sources.items():
        try:
            params = {"at": str(at), "tail": str(at)}
            async with session.get(f"{url}/v1/segments/{seg.pg}/pages/{page}", params=params,
                                   timeout=_READ_TIMEOUT) as resp:
                body = await resp.read()
            await bucket.consume(len(body))
            progress.add(len(body))
            if resp.status == 200 and len(body) == seg.layout.page_size:
                return body
            log.info("page_refetch_refused", pg=seg.pg, page=page, source=name, status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("page_refetch_failed", pg=seg.pg, page=page, source=name, error=repr(exc))
    raise SourceError(f"no other source could serve page {page} at {at}")


async def install_base(state: NodeState, seg: Segment, info: dict) -> None:
    """Re-base the segment's chain on the snapshot: floor = SCL = base. Synchronous up
    to the commit, so no intake interleaves; records that arrived meanwhile are kept
    (those above the base relink; any at or below it are covered by the snapshot)."""
    _check_live(seg)
    base = int(info["base_lsn"])
    src = info.get("meta", {})
    src_meta = SegmentMeta.from_json(src["seg"]) if "seg" in src else SegmentMeta(seg.pg)
    meta = seg.log.meta
    deletes: list[bytes] = []
    # The source's truncation ranges are applied like a seal at our own epoch: records
    # this segment already holds inside them (the writer's, taken before the change, or a
    # retried hydration's) are uncommitted by definition and must go, or the SCL would
    # count them and no later record could link (found by the simulator, tests/sim).
    new_ranges = [r for r in src_meta.truncations if r not in meta.truncations]
    clipped = [(max(a, meta.floor), b) for a, b in new_ranges if b > meta.floor]
    if clipped:
        result = seg.log.seal(meta.volume_epoch, clipped)
        deletes += drop_keys(state.store, seg.pg, result.dropped)
        seg.note_dropped(result.dropped)
    for r in new_ranges:
        if r not in meta.truncations:
            meta.truncations.append(r)
    old = seg.log
    meta.vdl_hint = max(meta.vdl_hint, src_meta.vdl_hint)
    seg.pgmrpl = max(seg.pgmrpl, int(src.get("pgmrpl", 0)))
    if base > meta.scl:
        held: list[tuple[int, int]] = []
        prev = meta.floor
        for lsn in old.chain:
            held.append((lsn, prev))
            prev = lsn
        held.extend((lsn, p) for p, lsn in old.pending.items())
        keep = [(lsn, p) for lsn, p in held if lsn > base and not in_ranges(lsn, meta.truncations)]
        drop = [lsn for lsn, _p in held if lsn <= base]
        for lsn in drop:
            key = keys.log_key(seg.pg, lsn)
            deletes.append(key)
            raw = state.store.get(key)
            if raw is not None:
                try:
                    deletes.append(keys.index_key(seg.pg, peek_header(raw)[1], lsn))
                except ValueError:
                    pass
        meta.floor = base
        meta.scl = base
        seg.log = SegmentLog(meta, keep)
        seg.records -= len(drop)
        seg.materialized_lsn = base
        seg.gc_lsn = max(seg.gc_lsn, base)
        seg.log_gc_lsn = max(seg.log_gc_lsn, base)
        seg.boundaries = [base]
        seg.unmaterialized = array("Q", (x for x in seg.unmaterialized if x > base))
    await state.committer.submit([seg], deletes=deletes)


async def _statuses(session, seg: Segment, sources: dict[str, str]) -> dict[str, dict]:
    from .gossip import _peer_status

    names = list(sources)
    got = await asyncio.gather(*(_peer_status(session, sources[n]) for n in names))
    out = {}
    for name, st in zip(names, got, strict=True):
        peer = st.get(seg.pg)
        if peer and int(peer.get("volume_epoch", -1)) == seg.meta.volume_epoch:
            out[name] = peer
    return out


async def fetch_range(state, session, seg, a: int, b: int, order: list[tuple[str, str]],
                      bucket, progress, limit: int) -> None:
    """Records in (a, b] from the sources in `order` (first preferred), CRC-checked."""
    after = a
    i = 0
    failures = 0
    while after < b:
        _check_live(seg)
        name, url = order[i % len(order)]
        params = {"after": str(after), "upto": str(b), "limit": str(limit)}
        try:
            async with session.get(f"{url}/v1/segments/{seg.pg}/records", params=params,
                                   timeout=_READ_TIMEOUT) as resp:
                body = await resp.read()
                corrupt = resp.headers.get("X-Tidemark-Corrupt-LSN")
                if resp.status != 200:
                    raise SourceError(f"records: HTTP {resp.status} {body[:200]!r}")
            await bucket.consume(len(body))
            try:
                recs = decode_raw_records(body)
            except ProtocolError as exc:  # damaged in transit: the whole answer goes
                progress.add(len(body))
                raise SourceError(f"records: {exc}") from exc
            recs = [r for r in recs if r.pg == seg.pg and after < r.lsn <= b]
            progress.add(len(body), len(recs))
            if recs:
                _check_live(seg)
                await ingest(state, seg, recs)
                after = recs[-1].lsn
            if corrupt is not None:
                raise SourceError(f"records: source copy of lsn {corrupt} is corrupt")
            failures = 0
            if len(recs) < limit:
                return
        except (SourceError, aiohttp.ClientError, TimeoutError) as exc:
            failures += 1
            progress.h["refetched"] += 1
            log.info("records_refetch", pg=seg.pg, source=name, after=after, upto=b, error=str(exc))
            if failures >= 2 * len(order):
                raise HydrationError(f"no source could serve records ({after}, {b}]: {exc}") from exc
            i += 1
            if failures >= len(order):
                await asyncio.sleep(0.2)


async def fetch_log(state, session, seg, sources, bucket, progress, info) -> None:
    s = int(info["snapshot_lsn"])
    statuses = await _statuses(session, seg, sources)
    if not statuses:
        raise HydrationError(f"no source answers for pg {seg.pg} at volume epoch {seg.meta.volume_epoch}")
    usable = [(n, sources[n]) for n, st in statuses.items() if int(st.get("scl", 0)) >= s]
    if not usable:
        progress.h["target_lsn"] = s
        return
    target = min(int(statuses[n]["scl"]) for n, _u in usable)
    progress.h["target_lsn"] = target
    if target <= s:
        return
    src_scl = int(info.get("scl", s))
    est = int(info.get("log_records_above", 0))
    if src_scl > s and target > src_scl:
        est = int(est * (target - s) / (src_scl - s))
    progress.log_records_est = est
    progress.update()
    limit = state.settings.gossip_chunk
    n_chunks = max(2 * len(usable), math.ceil(est / limit) if est else 1)
    width = max(1, math.ceil((target - s) / n_chunks))
    queue: asyncio.Queue = asyncio.Queue()
    lo = s
    while lo < target:
        queue.put_nowait((lo, min(target, lo + width)))
        lo += width

    async def worker(k: int) -> None:
        order = usable[k:] + usable[:k]
        while not queue.empty():
            a, b = queue.get_nowait()
            await fetch_range(state, session, seg, a, b, order, bucket, progress, limit)

    try:
        async with asyncio.TaskGroup() as tg:  # one failing worker stops the others
            for k in range(len(usable)):
                tg.create_task(worker(k))
    except* HydrationError as eg:
        raise eg.exceptions[0] from None
    log.info("hydration_log_fetched", pg=seg.pg, after=s, upto=target, sources=[n for n, _ in usable],
             records=progress.log_records, scl=seg.durable_scl)


async def catch_up(state, session, seg, sources, bucket, progress, info) -> None:
    """Pull until the SCL reaches what the peers had when this phase began."""
    s = int(info["snapshot_lsn"])
    peers = dict(sources)
    for name in seg.membership.all_members:
        url = state.peer_url(seg, name) if name != state.name else None
        if url:
            peers.setdefault(name, url)
    statuses = await _statuses(session, seg, peers)
    if not statuses:
        return
    target = max(int(st.get("scl", 0)) for st in statuses.values())
    progress.h["target_lsn"] = max(target, progress.h["target_lsn"] or 0)
    order = sorted(((n, peers[n]) for n in statuses), key=lambda nu: -int(statuses[nu[0]]["scl"]))
    for _ in range(50):
        if seg.durable_scl >= target:
            return
        # No record of the PG lies in (base, S]: asking above S is the same and is
        # never below a source's log GC horizon (its snapshot pin held it at S).
        await fetch_range(state, session, seg, max(seg.durable_scl, s), target, order, bucket,
                          progress, state.settings.gossip_chunk)
        if seg.durable_scl >= target:
            return
        await asyncio.sleep(0.1)  # holes: records still arriving at the sources
    raise HydrationError(f"SCL {seg.durable_scl} did not reach the peers' {target}")
