"""The node's backup uploader: an asyncio task started by the node when `--backup` is given.

Every `interval` seconds, off the foreground path (reads in the node's reader pool,
S3 calls in a thread):
- registers this node generation (`nodes/{node}/g{gen}.json`) once; if a newer
  generation of the same node name is registered the uploader is *fenced*: it stops
  uploading and never deletes anything again;
- uploads the VDL marks the node received since the last upload (`marks/...`);
- for every hosted PG for which it is the designated uploader (the first live member
  in a per-PG rotation of the membership; a dead one's successor takes over), uploads
  log chunks of records <= the certified end (uploader_state.certified_end)
  contiguously from where the bucket's coverage ends, and takes an incremental base
  image of the PG by policy (only the extents changed since its last image are
  written, tidemark_backup.images);
- holds back the node's log GC above the bucket's coverage so nothing is lost while
  the store is unreachable (backups lag, then catch up with no gap);
- applies retention (designated uploader only, unfenced only).
A failed upload is retried on the next round (tenacity inside a round); it never stops
later ones. The bucket's format (keys, objects, catalog, retention) is tidemark_backup;
with --backup-key-file every object is sealed (AES-256-GCM) by the store (sealed.py).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque

import aiohttp
import structlog
from opentelemetry.metrics import Observation
from tenacity import retry, stop_after_attempt, wait_exponential

from tidemark_backup import chunks, images, layout, retention
from tidemark_backup.catalog import PgCatalog, catalog
from tidemark_backup.objstore import Exists, ObjStore, open_store
from tidemark_protocol.records import iter_encoded

from . import reads
from .segments import Segment
from .state import NodeState
from .tls import peer_session
from .uploader_state import (
    BackupSettings,
    PgProgress,
    UploaderStatus,
    certified_end,
    designation_order,
)

log = structlog.get_logger("tidemark.backup.uploader")

MAX_CHUNK_RECORDS = 20_000
MARKS_MAX = 1_000_000
EXTENT_PUTS = 8  # extent uploads in flight per image


class Uploader:
    def __init__(self, state: NodeState, settings: BackupSettings, store: ObjStore | None = None) -> None:
        self.state = state
        self.settings = settings
        self.store = store or open_store(settings.url, keyring=settings.keyring)
        self.status = UploaderStatus()
        self.status.key_id = settings.keyring.current.id if settings.keyring.current else None
        self.progress: dict[int, PgProgress] = {}
        self.marks: deque[tuple[int, int]] = deque(maxlen=MARKS_MAX)
        self.marks_seq = 0
        self.vdl_seen = 0  # highest VDL in the marks received: durable, node-wide
        self.registered = False
        self.last_retention = 0.0
        self.peers: dict[str, dict] = {}  # this round's /v1/status of peer nodes
        # Intake appends VDL marks here; GC respects the holds.
        state.backup_marks = self.marks
        state.backup_holds = {}
        state.backup_status = self.status
        self._register_metrics()

    def _register_metrics(self) -> None:
        """OpenTelemetry gauges on the node's meter provider (served at /metrics)."""
        meter = self.state.telemetry.meter_provider.get_meter("tidemark.backup")
        st = self.status
        gauges = {
            "tidemark_backup_last_successful_upload_seconds": lambda: st.last_successful_upload or 0.0,
            "tidemark_backup_uploaded_bytes": lambda: st.uploaded_bytes,
            "tidemark_backup_uploaded_objects": lambda: st.uploaded_objects,
            "tidemark_backup_fenced": lambda: int(st.fenced),
            "tidemark_backup_conditional_puts": lambda: int(st.conditional_puts),
            "tidemark_backup_pending_marks": lambda: len(self.marks),
        }
        for name, fn in gauges.items():
            meter.create_observable_gauge(name, callbacks=[lambda _o, fn=fn: [Observation(fn())]])
        meter.create_observable_gauge(
            "tidemark_backup_covered_lsn", description="log uploaded contiguously up to this LSN",
            callbacks=[lambda _o: [Observation(p.covered, {"pg": str(pg)})
                                   for pg, p in self.progress.items() if p.designated]])

    # -- store calls (threads) --------------------------------------------------------
    async def _io(self, fn, *args):
        @retry(stop=stop_after_attempt(3), wait=wait_exponential(0.1, max=1.0), reraise=True)
        def call():
            return fn(*args)

        return await asyncio.to_thread(call)

    async def _put(self, key: str, data: bytes) -> None:
        try:
            await self._io(self.store.put, key, data)
        except Exists:
            pass  # same key = same content from us (deterministic keys per generation)
        finally:
            self.status.conditional_puts = self.store.conditional_puts  # status says it, not only the log
        self.status.uploaded_objects += 1
        self.status.uploaded_bytes += len(data)
        self.status.last_successful_upload = time.time()

    def _header(self, pg: int, start: int, end: int, seg: Segment) -> dict:
        return {"pg": pg, "start": start, "end": end, "epoch": seg.meta.volume_epoch,
                "node": self.state.name, "gen": self.state.generation,
                "created_us": int(time.time() * 1e6), "format": layout.FORMAT_VERSION}

    # -- the loop ------------------------------------------------------------------------
    async def run(self) -> None:
        session = peer_session(self.state.settings, timeout=aiohttp.ClientTimeout(total=1.5))
        try:
            while True:
                try:
                    await self.round(session)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._error(exc)
                await asyncio.sleep(self.settings.interval)
        finally:
            await session.close()

    def _error(self, exc: BaseException) -> None:
        self.status.last_error = f"{type(exc).__name__}: {exc}"[:500]
        self.status.last_error_time = time.time()
        log.warning("backup_error", error=self.status.last_error)

    async def round(self, session: aiohttp.ClientSession) -> None:
        state = self.state
        if self.status.fenced:
            return
        await self._check_fence()
        if self.status.fenced:
            return
        await self._upload_marks()
        self.peers = await self._peer_round(session)
        live = self._live_nodes()
        for pg, seg in sorted(state.segments.items()):
            if seg.deleted or seg.hydrating():
                continue  # a rebuilding segment is not complete yet
            prog = self.progress.setdefault(pg, PgProgress())
            order = designation_order(pg, list(seg.membership.all_members))
            mine = state.name in order
            ahead = order[: order.index(state.name)] if mine else order
            designated = mine and not any(n in live for n in ahead)
            if not designated:
                prog.image = {}  # another uploader's images may follow ours: share nothing stale
                prog.empty_run = None
            prog.designated = designated
            try:
                if prog.designated:
                    await self._upload_pg(seg, prog)
                elif time.monotonic() - prog.refreshed > 5 * self.settings.interval:
                    await self._refresh_coverage(seg, prog)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._error(exc)
            if prog.covered >= 0 and state.backup_holds is not None:
                state.backup_holds[pg] = prog.covered
            self.status.pgs[str(pg)] = {"designated": prog.designated, "covered": prog.covered}
        if time.monotonic() - self.last_retention > self.settings.retention_interval:
            self.last_retention = time.monotonic()
            await self._retention()

    async def _check_fence(self) -> None:
        state = self.state
        if not self.registered:
            body = json.dumps({"node": state.name, "generation": state.generation,
                               "zone": state.settings.zone, "started": time.time(),
                               "format": layout.FORMAT_VERSION}).encode()
            await self._put(layout.node_key(state.name, state.generation), body)
            try:
                await self._io(self.store.put, layout.format_key(), json.dumps(
                    {"format": "tidemark-backup", "version": layout.FORMAT_VERSION}).encode())
            except Exists:
                pass
            self.registered = True
        objs = await self._io(self.store.list, f"nodes/{state.name}/")
        newer = [o.gen for o in objs if o.kind == "node" and o.node == state.name
                 and o.gen > state.generation]
        if newer:
            self.status.fenced = True
            state.backup_holds = None  # a fenced uploader holds nothing back
            self.status.last_error = (f"fenced: generation {max(newer)} of node {state.name} "
                                      f"supersedes ours ({state.generation})")
            log.warning("backup_fenced", newer=max(newer), ours=state.generation)

    async def _upload_marks(self) -> None:
        if not self.marks:
            return
        batch = list(self.marks)
        self.vdl_seen = max(self.vdl_seen, max(v for v, _t in batch))
        self.status.vdl_seen = self.vdl_seen
        self.status.pending_marks = len(batch)
        self.marks_seq += 1
        hdr = {"node": self.state.name, "gen": self.state.generation,
               "created_us": int(time.time() * 1e6)}
        vdls = [v for v, _t in batch]
        # The VDL range in the key lets retention prune marks without reading them.
        await self._put(layout.marks_key(self.state.name, self.state.generation, self.marks_seq,
                                         min(vdls), max(vdls)),
                        chunks.encode_marks(hdr, batch))
        for _ in range(len(batch)):
            self.marks.popleft()
        self.status.pending_marks = len(self.marks)

    async def _peer_round(self, session: aiohttp.ClientSession) -> dict[str, dict]:
        """/v1/status of every member of our PGs (one call per node per round)."""
        state = self.state
        urls: dict[str, str] = {}
        for seg in state.segments.values():
            for m in seg.membership.all_members:
                url = state.peer_url(seg, m)
                if url and m != state.name:
                    urls[m] = url

        async def one(name: str, url: str) -> tuple[str, dict | None]:
            try:
                async with session.get(f"{url}/v1/status") as resp:
                    return name, (await resp.json()) if resp.status == 200 else None
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                return name, None

        return {n: d for n, d in await asyncio.gather(*(one(n, u) for n, u in urls.items())) if d}

    def _live_nodes(self) -> set[str]:
        """Nodes that can upload: serving, backing up, not fenced (a fenced or
        backup-less node hands its PGs to the next member in the rotation)."""
        live = {self.state.name}
        for name, data in self.peers.items():
            bk = data.get("backup")
            if bk and not bk.get("fenced"):
                live.add(name)
        return live

    def _peer_segments(self, seg: Segment) -> dict[str, dict]:
        """This round's status of the PG's segment on each other member that answered,
        with that node's `vdl_seen`."""
        out = {}
        for name in seg.membership.all_members:
            data = self.peers.get(name)
            if name == self.state.name or not data:
                continue
            seen = int((data.get("backup") or {}).get("vdlSeen") or 0)
            for s in data.get("segments", []):
                if s.get("pg") == seg.pg:
                    out[name] = {**s, "vdl_seen": seen}
        return out

    def certified_end(self, seg: Segment) -> int:
        """See uploader_state.certified_end."""
        # The PG's hint moves only with frames holding its records; the marks carry
        # the writer's VDL to every node.
        peers = self._peer_segments(seg)
        # Marks reach only nodes that got a frame after the VDL moved: learn from peers.
        vdl = max([seg.meta.vdl_hint, self.vdl_seen] + [p["vdl_seen"] for p in peers.values()])
        return certified_end(self.state.name, seg.membership, seg.durable_scl, seg.log.max_lsn,
                             vdl, peers)

    async def _refresh_coverage(self, seg: Segment, prog: PgProgress) -> None:
        objs = await self._io(self.store.list, layout.pg_dir(seg.pg))
        cat = catalog(objs).get(seg.pg)
        prog.refreshed = time.monotonic()
        before = prog.covered
        self._coverage_from(seg, prog, cat)
        if prog.covered != before:
            prog.empty_run = None  # someone else's chunks: extend nothing of ours

    def _coverage_from(self, seg: Segment, prog: PgProgress, cat: PgCatalog | None) -> None:
        if cat is None:
            prog.covered = 0 if seg.log_gc_lsn == 0 else -1
            return
        bases = cat.bases()
        prog.covered = max((cat.reach(b) for b in bases), default=0 if seg.log_gc_lsn == 0 else -1)
        if cat.snaps:
            prog.last_snap_time = max(prog.last_snap_time, cat.snaps[-1].mtime)

    async def _upload_pg(self, seg: Segment, prog: PgProgress) -> None:
        state = self.state
        if prog.covered < 0 or time.monotonic() - prog.refreshed > 30:
            await self._refresh_coverage(seg, prog)
        if not prog.manifest_written:
            body = json.dumps({"format": layout.FORMAT_VERSION, "pg": seg.pg,
                               "layout": seg.layout.to_json(), "node": state.name,
                               "generation": state.generation}).encode()
            await self._put(layout.manifest_key(seg.pg, state.name, state.generation), body)
            prog.manifest_written = True
        end = self.certified_end(seg)
        if prog.covered < 0 or prog.covered < seg.log_gc_lsn:
            # The log we would need is gone here: restart the chain with a snapshot.
            await self._snapshot(seg, prog, end)
            return
        loop = asyncio.get_running_loop()
        while prog.covered < end:
            start = prog.covered
            body, corrupt = await loop.run_in_executor(
                state.reader, reads.read_records, state.store, seg.pg, start, end,
                MAX_CHUNK_RECORDS)
            if corrupt is not None:
                raise RuntimeError(f"pg {seg.pg}: stored record {corrupt} is corrupt; not uploaded")
            # read_records CRC-checked every record: cut them apart without a second check.
            records = list(iter_encoded(body))
            stop = end
            if len(records) >= MAX_CHUNK_RECORDS:
                stop = records[-1].lsn
            # An idle PG gets an empty chunk whenever the volume's VDL moves: one that
            # follows our own empty one covers both instead (retention drops the
            # contained one), so an idle PG keeps one, not one per round.
            epoch = seg.meta.volume_epoch
            run = prog.empty_run  # extended only if it ends exactly where this one starts
            cstart = run[0] if not records and run is not None and run[1:] == (start, epoch) else start
            hdr = self._header(seg.pg, cstart, stop, seg)
            await self._put(layout.chunk_key(seg.pg, cstart, stop, epoch, state.name, state.generation),
                            chunks.encode_chunk(hdr, [r.raw for r in records]))
            prog.empty_run = None if records else (cstart, stop, epoch)
            prog.covered = stop
            prog.log_bytes_since_snap += len(body)
            _pin(seg, stop)
            if state.backup_holds is not None:
                state.backup_holds[seg.pg] = stop
        now = time.time()
        if prog.log_bytes_since_snap and (
            now - prog.last_snap_time >= self.settings.snapshot_interval
            or prog.log_bytes_since_snap >= self.settings.snapshot_log_bytes
        ):
            await self._snapshot(seg, prog, prog.covered)

    async def _snapshot(self, seg: Segment, prog: PgProgress, at: int) -> None:
        state = self.state
        if at < seg.gc_lsn:  # versions below the GC horizon are gone (see _pin)
            return
        lay = seg.layout
        first = seg.pg * lay.pages_per_pg

        def read_all() -> dict[int, bytes]:
            zero = bytes(lay.page_size)
            out = {}
            for page in range(first, first + lay.pages_per_pg):
                img = reads.read_page(state.store, seg.pg, page, at, lay.page_size)
                if img != zero:
                    out[page] = img
            return out

        pages = await asyncio.get_running_loop().run_in_executor(state.reader, read_all)
        span = images.span_of(lay.page_size, self.settings.extent_bytes)
        epoch, node, gen = seg.meta.volume_epoch, state.name, state.generation
        # Share only extents still in the bucket (retention may have dropped an old one).
        existing = ({o.key for o in await self._io(self.store.list, layout.extent_dir(seg.pg))}
                    if prog.image else set())
        plan = images.plan(pages, first, span, at, epoch, node, gen, prog.image, existing, seg.pg)
        hdr = {"pg": seg.pg, "lsn": at, "page_size": lay.page_size}
        sem = asyncio.Semaphore(EXTENT_PUTS)

        async def put_extent(efirst: int, ext: dict[int, bytes]) -> None:
            async with sem:
                await self._put(layout.extent_key(seg.pg, efirst, at, epoch, node, gen),
                                chunks.encode_extent(hdr, efirst, span, ext))

        # Extents first (in parallel: a full image of a large PG is many of them), so an
        # image never lists a missing one.
        await asyncio.gather(*(put_extent(f, ext) for f, ext in plan.new.items()))
        await self._put(layout.image_key(seg.pg, at, epoch, node, gen, plan.pages),
                        chunks.encode_image({**hdr, "span": span, "format": layout.FORMAT_VERSION},
                                            plan.refs, plan.pages, (epoch, node, gen)))
        prog.image = plan.digests
        prog.last_snap_time = time.time()
        prog.log_bytes_since_snap = 0
        prog.covered = max(prog.covered, at)

    async def _retention(self) -> None:
        if self.status.fenced:
            return
        mine = [pg for pg, p in self.progress.items() if p.designated]
        if not mine:
            return
        deletes = await self._io(retention.apply, self.store, time.time(),
                                 self.settings.retention_days * 86400.0, set(mine))
        if deletes:
            log.info("backup_retention", deleted=len(deletes))


def _pin(seg: Segment, lsn: int) -> None:
    """Keep page versions at `lsn` (GC's horizon stays at or below it) so the next
    snapshot can be read at the uploaded boundary even under sustained load."""
    seg.pins["backup"] = (lsn, None)


def start_uploader(state: NodeState) -> asyncio.Task:
    """Called by the node's start sequence when `--backup URL` is given."""
    assert state.settings.backup is not None
    settings = BackupSettings(state.settings.backup, **state.settings.backup_options)
    uploader = Uploader(state, settings)
    return asyncio.get_running_loop().create_task(uploader.run(), name="backup")
