"""Point-in-time restore: read the bucket, map T to an LSN through the VDL marks, rebuild
every PG's pages at that LSN in parallel (latest snapshot at or below it + log chunks),
and load them into a NEW playground fleet as full-page images."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import google_crc32c

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_redo
from tidemark_protocol.records import Record, RecordFlags

from . import chunks, layout
from .catalog import PgCatalog, Timeline, catalog, volume_intervals
from .layout import Obj
from .objstore import ObjStore

if TYPE_CHECKING:
    from tidemark_compute.topology import Topology


class RestoreError(Exception):
    pass


@dataclass
class Inventory:
    objs: list[Obj]
    layout: VolumeLayout | None
    timeline: Timeline
    cats: dict[int, PgCatalog]
    problems: list[str] = field(default_factory=list)  # garbage or unreadable objects

    def intervals(self) -> list[tuple[int, int]]:
        return volume_intervals(self.cats, self.layout.pg_count) if self.layout else []

    def window(self) -> tuple[int | None, int | None]:
        """(firstRecoverableTime, latestRestorableTime) in unix µs."""
        ok = self.timeline.restorable(self.intervals())
        if not ok:
            return None, None
        first, last = ok[0][1], ok[-1][1]
        later = [t for _v, t in self.timeline.marks if t > last]
        # A later mark proves nothing was acknowledged between the last restorable
        # mark and it: every instant before it maps to the same LSN.
        return first, (min(later) - 1 if later else last)

    def lsn_for(self, t_us: int) -> int:
        first, latest = self.window()
        if first is None:
            raise RestoreError("the backup has no restorable point yet")
        if not first <= t_us <= latest:
            raise RestoreError(f"{iso(t_us)} is outside the restorable window "
                               f"[{iso(first)}, {iso(latest)}]")
        lsn = self.timeline.lsn_at(t_us)
        assert lsn is not None
        return lsn


def iso(t_us: int | None) -> str | None:
    if t_us is None:
        return None
    return datetime.fromtimestamp(t_us / 1e6, UTC).isoformat(timespec="microseconds")


def parse_time(text: str) -> int:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


def load_inventory(store: ObjStore, workers: int = 16) -> Inventory:
    objs = store.list("")
    problems = [f"unrecognized object {o.key}" for o in objs if o.kind == "unknown"]
    marks: list[tuple[int, int]] = []
    mark_objs = [o for o in objs if o.kind == "marks"]

    def get_marks(o: Obj):
        try:
            return chunks.decode_marks(store.get(o.key))[1]
        except (chunks.BadObject, KeyError, ValueError) as exc:
            problems.append(f"bad marks object {o.key}: {exc}")
            return []

    with ThreadPoolExecutor(workers) as pool:
        for got in pool.map(get_marks, mark_objs):
            marks += got
    lay = None
    for o in objs:
        if o.kind == "manifest":
            try:
                lay = VolumeLayout.from_json(json.loads(store.get(o.key))["layout"])
                break
            except (KeyError, ValueError, TypeError) as exc:
                problems.append(f"bad manifest {o.key}: {exc}")
    return Inventory(objs, lay, Timeline(marks), catalog(objs), problems)


def rebuild_pg(store: ObjStore, cat: PgCatalog, target: int, page_size: int,
               problems: list[str], on_bytes: Callable[[int], None] = lambda n: None) -> dict[int, bytes]:
    """The PG's non-zero pages at LSN `target`. Objects that fail their checks are
    reported and left out; another chain (another node's copy, an older snapshot) is
    tried instead."""
    bad: set[str] = set()
    while True:
        live = PgCatalog(cat.pg, [s for s in cat.snaps if s.key not in bad],
                         [c for c in cat.chunks if c.key not in bad])
        chain = live.chain(target)
        if chain is None:
            raise RestoreError(f"pg {cat.pg}: no intact snapshot + log chain reaches LSN {target}")
        base, used = chain
        pool = ThreadPoolExecutor(8)
        try:
            # Start every chunk download now; the snapshot downloads meanwhile.
            futures = [(c, pool.submit(_get, store, c)) for c in used]
            pages: dict[int, bytes] = {}
            if base > 0:
                snaps = [s for s in live.snaps if s.start == base]
                for s in snaps:
                    try:
                        data = store.get(s.key)
                        on_bytes(len(data))
                        hdr, pages = chunks.decode_snap(data)
                        if hdr.get("pg") != cat.pg or hdr.get("lsn") != base:
                            raise chunks.BadObject("snapshot header does not match its key")
                        break
                    except (chunks.BadObject, KeyError, ValueError) as exc:
                        problems.append(f"skipped {s.key}: {exc}")
                        bad.add(s.key)
                else:
                    continue
            applied = base
            for c, fut in futures:
                data = fut.result()
                if data is None:
                    raise _Retry(c.key, "missing")
                on_bytes(len(data))
                try:
                    hdr, records = chunks.decode_chunk_fast(data)
                except (chunks.BadObject, KeyError, TypeError) as exc:
                    raise _Retry(c.key, str(exc)) from exc
                if (hdr.get("pg"), hdr.get("start"), hdr.get("end")) != (cat.pg, c.start, c.end):
                    raise _Retry(c.key, "chunk header does not match its key")
                for lsn, page, flags, payload in records:
                    if applied < lsn <= target:
                        if flags & RecordFlags.FULL_IMAGE and len(payload) == page_size:
                            pages[page] = payload
                        else:
                            rec = Record(lsn, cat.pg, page, 0, 0, RecordFlags(flags), payload)
                            pages[page] = apply_redo(pages.get(page, b""), rec, page_size)
                        applied = lsn
            zero = bytes(page_size)
            return {p: img for p, img in pages.items() if img != zero}
        except _Retry as exc:
            problems.append(f"skipped {exc.key}: {exc.why}")
            bad.add(exc.key)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


class _Retry(Exception):
    def __init__(self, key: str, why: str) -> None:
        super().__init__(key)
        self.key, self.why = key, why


def _get(store: ObjStore, o: Obj) -> bytes | None:
    try:
        return store.get(o.key)
    except KeyError:
        return None


def rebuild_volume(store: ObjStore, inv: Inventory, target: int, workers: int = 8,
                   on_pg: Callable[[int], None] = lambda pg: None,
                   on_bytes: Callable[[int], None] = lambda n: None) -> dict[int, bytes]:
    """Every PG in parallel; returns page -> image (pages written at least once).
    (Worker processes were measured slower: shipping the pages back costs more than
    the GIL.)"""
    assert inv.layout is not None
    out: dict[int, bytes] = {}

    def one(pg: int) -> dict[int, bytes]:
        cat = inv.cats.get(pg) or PgCatalog(pg)
        pages = rebuild_pg(store, cat, target, inv.layout.page_size, inv.problems, on_bytes)
        on_pg(pg)
        return pages

    with ThreadPoolExecutor(workers) as pool:
        for pages in pool.map(one, range(inv.layout.pg_count)):
            out.update(pages)
    return out


def random_base_ip() -> str:
    return f"127.{random.randint(100, 199)}.{random.randint(1, 250)}.10"


async def check_empty_fleet(topology: Topology, lay: VolumeLayout, target: int | None = None) -> None:
    """The fleet must match the backup's layout and every segment must be empty:
    restore never writes over data. (A segment already installed at `target` passes:
    a retried restore; the node itself refuses it if a writer has used it since.)"""
    import aiohttp

    if topology.layout.to_json() != lay.to_json():
        raise RestoreError(f"the target fleet's layout {topology.layout.to_json()} differs from the "
                           f"backup's {lay.to_json()}")
    if sorted(topology.memberships) != list(range(lay.pg_count)):
        raise RestoreError("the target fleet's topology does not place every PG of the backup")
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        for name, url in topology.nodes.items():
            try:
                async with http.get(f"{url}/v1/status") as resp:
                    resp.raise_for_status()
                    status = await resp.json()
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RestoreError(f"target node {name} ({url}) is not reachable: {exc!r}") from exc
            for seg in status.get("segments", []):
                if target is not None and seg.get("scl") == seg.get("max_lsn") == target \
                        and not seg.get("records"):
                    continue
                if seg.get("max_lsn", 0) or seg.get("scl", 0) or seg.get("records", 0):
                    raise RestoreError(f"target node {name} pg {seg.get('pg')} is not empty "
                                       f"(scl={seg.get('scl')}, records={seg.get('records')}): "
                                       "restore needs an empty fleet")


def install_file(pg: int, lsn: int, pages: dict[int, bytes]) -> bytes:
    """The install endpoint's body (docs/wire.md): an SST file of the PG's page versions
    at `lsn` in the node's key format (V pg page lsn -> crc32c + image). Built once per
    PG, sent to every member. Empty when the PG has no page."""
    import os
    import tempfile

    from rocksdict import DBCompressionType, Options, SstFileWriter

    if not pages:
        return b""
    opts = Options(raw_mode=True)
    opts.set_compression_type(DBCompressionType.none())  # page images: CPU for ~nothing
    fd, path = tempfile.mkstemp(suffix=".sst", prefix=f"tidemark-restore-pg{pg}-")
    os.close(fd)
    try:
        w = SstFileWriter(opts)
        w.open(path)
        for page, img in sorted(pages.items()):
            w[_VKEY.pack(b"V", pg, page, lsn)] = google_crc32c.value(img).to_bytes(4, "little") + img
        w.finish()
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


_VKEY = struct.Struct(">cIQQ")  # node/tidemark_node/store.py version_key


async def _install_all(store: ObjStore, inv: Inventory, target: int, topology: Topology,
                       report: Callable[[str, int, int], None], workers: int = 4) -> int:
    """Rebuild PGs in threads and stream each one, as soon as it is rebuilt, into every
    member's segment (POST /v1/segments/{pg}/install); at most `workers` PGs in flight.
    Returns the number of pages installed."""
    import aiohttp

    lay = inv.layout
    assert lay is not None
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="rebuild")
    sem = asyncio.Semaphore(workers)
    done = [0, 0]  # PGs, pages

    async def one(http: aiohttp.ClientSession, pg: int) -> None:
        async with sem:
            cat = inv.cats.get(pg) or PgCatalog(pg)

            def build() -> tuple[int, bytes, int]:
                pages = rebuild_pg(store, cat, target, lay.page_size, inv.problems)
                body = install_file(pg, target, pages)
                return len(pages), body, google_crc32c.value(body)

            count, body, crc = await loop.run_in_executor(pool, build)
            members = sorted(topology.memberships[pg].all_members)

            async def push(name: str) -> None:
                url = f"{topology.nodes[name]}/v1/segments/{pg}/install"
                async with http.post(url, params={"lsn": str(target), "count": str(count), "crc32c": str(crc)},
                                     data=_pieces(body),
                                     headers={"Content-Type": "application/octet-stream"}) as resp:
                    if resp.status != 200:
                        text = (await resp.text())[:300]
                        why = "the segment is not empty: " if resp.status == 409 else ""
                        raise RestoreError(f"pg {pg}: node {name} refused the install: {why}"
                                           f"HTTP {resp.status} {text}")

            try:
                await asyncio.gather(*(push(n) for n in members))
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise RestoreError(f"pg {pg}: install on its members failed: {exc!r} "
                                   "(retry the restore with the same time)") from exc
            done[0] += 1
            done[1] += count
            report("install", done[0], lay.pg_count)

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
    try:
        async with aiohttp.ClientSession(timeout=timeout,
                                         connector=aiohttp.TCPConnector(limit=64)) as http:
            await asyncio.gather(*(one(http, pg) for pg in range(lay.pg_count)))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return done[1]


async def _pieces(body: bytes, size: int = 1 << 20):
    """The body 1 MiB at a time: aiohttp then waits for the socket between pieces.
    (Given one big bytes object, asyncio's transport buffers the unsent rest in a
    bytearray and trims its front after every send: quadratic copying, measured as
    the restore's main CPU cost.)"""
    view = memoryview(body)
    for i in range(0, len(body), size):
        yield view[i : i + size]


async def _open_writer(topology: Topology) -> int:
    """A writer opens the restored volume (recovery over every PG): its VDL."""
    from tidemark_compute.writer import Writer

    writer = await Writer.open(topology)
    try:
        return writer.vdl
    finally:
        await writer.close()


def restore_into(store: ObjStore, t_us: int, topology: Topology,
                 progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Load the backup at time `t_us` into an existing, EMPTY fleet (nodes running,
    segments created, layout equal to the backup's). progress(phase, done, total) is
    called with phases "inventory", "install" (PGs rebuilt and installed on every
    member), "open" (a writer recovers the volume).

    Blocking; do not call from a running event loop's thread (use a worker thread)."""
    report = progress or (lambda _phase, _done, _total: None)
    t0 = time.monotonic()
    report("inventory", 0, 1)
    inv = load_inventory(store)
    report("inventory", 1, 1)
    return _restore_into(store, inv, t_us, topology, report, t0)


def _restore_into(store: ObjStore, inv: Inventory, t_us: int, topology: Topology,
                  report: Callable[[str, int, int], None], t0: float) -> dict:
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup: nothing to restore")
    target = inv.lsn_for(t_us)
    lay = inv.layout
    asyncio.run(check_empty_fleet(topology, lay, target))
    report("install", 0, lay.pg_count)

    async def go() -> tuple[int, float, int]:
        pages = await _install_all(store, inv, target, topology, report)
        t_installed = time.monotonic() - t0
        report("open", 0, 1)
        vdl = await _open_writer(topology)
        report("open", 1, 1)
        return pages, t_installed, vdl

    pages, t_installed, vdl = asyncio.run(go())
    return {
        "to_time": iso(t_us),
        "lsn": target,
        "pages": pages,
        "pgs": lay.pg_count,
        "new_vdl": vdl,
        "problems": inv.problems,
        "install_s": round(t_installed, 3),
        "total_s": round(time.monotonic() - t0, 3),
    }


def restore(url_store: ObjStore, t_us: int, directory: Path, backup: str | None = None,
            base_ip: str | None = None, progress: bool = True, nodes_per_zone: int = 2) -> dict:
    """`tidemark restore`: start a NEW playground fleet in `directory` with the backup's
    layout, then restore_into it."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tidemark_compute.topology import save_topology
    from tidemark_playground import fleet as fleet_mod

    t0 = time.monotonic()
    inv = load_inventory(url_store)
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup: nothing to restore")
    target = inv.lsn_for(t_us)  # refuse a bad T before starting anything
    lay = inv.layout
    kwargs = {"backup": backup} if backup else {}
    _fleet, topology = asyncio.run(fleet_mod.up(directory, nodes_per_zone, lay.pg_count, lay.pages_per_pg,
                                                lay.page_size, base_ip or random_base_ip(), **kwargs))
    save_topology(directory, topology)
    t_fleet = time.monotonic() - t0
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=not progress) as bar:
        tasks: dict[str, object] = {}
        labels = {"install": f"rebuild + install PGs at LSN {target}", "open": "open a writer"}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in labels:
                return
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels[phase], total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = _restore_into(url_store, inv, t_us, topology, report, t0)
    return {**result, "dir": str(directory), "nodes": topology.nodes, "backup": backup,
            "fleet_s": round(t_fleet, 3)}


__all__ = ["restore", "restore_into", "load_inventory", "rebuild_volume", "Inventory", "RestoreError", "parse_time",
           "iso", "layout"]
