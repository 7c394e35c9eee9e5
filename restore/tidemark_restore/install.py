"""Point-in-time restore into an existing, empty fleet: every PG rebuilt at the LSN of
time T and installed on each member as one CRC-checked SST file, then a writer opens
the volume at exactly that LSN."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import aiohttp
import google_crc32c
from rocksdict import DBCompressionType, Options, SstFileWriter

from tidemark_backup.catalog import PgCatalog
from tidemark_backup.objstore import ObjStore
from tidemark_compute.topology import Topology
from tidemark_compute.writer import Writer
from tidemark_protocol import keys
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.node_auth import Role

from .inventory import Inventory, RestoreError, iso, load_inventory, rebuild_pg


async def check_empty_fleet(topology: Topology, lay: VolumeLayout, target: int | None = None) -> None:
    """The fleet must match the backup's layout and every segment must be empty:
    restore never writes over data. (A segment already installed at `target` passes:
    a retried restore; the node itself refuses it if a writer has used it since.)"""
    if topology.layout.to_json() != lay.to_json():
        raise RestoreError(f"the target fleet's layout {topology.layout.to_json()} differs from the "
                           f"backup's {lay.to_json()}")
    if sorted(topology.memberships) != list(range(lay.pg_count)):
        raise RestoreError("the target fleet's topology does not place every PG of the backup")
    timeout = aiohttp.ClientTimeout(total=30)
    async with topology.session(Role.ADMIN, timeout=timeout) as http:
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


def write_install_file(path: str, pg: int, lsn: int, pages: dict[int, bytes]) -> None:
    """The install endpoint's body (docs/wire.md) at `path`: an SST file of the PG's page
    versions at `lsn` in the node's key format (V pg page lsn -> crc32c + image). Built
    once per PG, sent to every member. Empty when the PG has no page."""
    if not pages:
        with open(path, "wb"):
            return
    opts = Options(raw_mode=True)
    opts.set_compression_type(DBCompressionType.none())  # page images: CPU for ~nothing
    w = SstFileWriter(opts)
    w.open(path)
    for page, img in sorted(pages.items()):
        w[keys.version_key(pg, page, lsn)] = keys.encode_version(img)
    w.finish()


def install_file(pg: int, lsn: int, pages: dict[int, bytes]) -> bytes:
    """The install body in memory (tests, small volumes)."""
    fd, path = tempfile.mkstemp(suffix=".sst", prefix=f"tidemark-restore-pg{pg}-")
    os.close(fd)
    try:
        write_install_file(path, pg, lsn, pages)
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


async def _install_all(store: ObjStore, inv: Inventory, target: int, topology: Topology,
                       report: Callable[[str, int, int], None], workers: int = 4) -> int:
    """Rebuild every PG (threads, `workers` at a time), THEN stream each PG's file into
    every member's segment (POST /v1/segments/{pg}/install), `workers` PGs in flight.
    All PGs are rebuilt before the first install, so an object that fails its checks
    (a tampered or undecryptable one raises) stops the restore with nothing installed;
    the price is one staged copy of the volume on local disk (a temp dir, removed after)
    and no overlap of rebuild and install. Returns the number of pages installed."""
    lay = inv.layout
    assert lay is not None
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="rebuild")
    sem = asyncio.Semaphore(workers)
    done = [0, 0]  # PGs, pages

    staging = tempfile.mkdtemp(prefix="tidemark-restore-")

    def build(pg: int) -> tuple[int, int, str, int]:
        cat = inv.cats.get(pg) or PgCatalog(pg)
        pages = rebuild_pg(store, cat, target, lay.page_size, inv.problems)
        path = os.path.join(staging, f"pg{pg}.sst")
        write_install_file(path, pg, target, pages)
        return pg, len(pages), path, _file_crc(path)

    async def install(http: aiohttp.ClientSession, pg: int, count: int, path: str, crc: int) -> None:
        async with sem:
            members = sorted(topology.memberships[pg].all_members)
            body = await loop.run_in_executor(pool, _read, path)  # one PG's file in memory at a time

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
        built = await asyncio.gather(*(loop.run_in_executor(pool, build, pg) for pg in range(lay.pg_count)))
        async with topology.session(Role.ADMIN, limit=64, timeout=timeout) as http:
            await asyncio.gather(*(install(http, *b) for b in built))
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    return done[1]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _file_crc(path: str) -> int:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = google_crc32c.extend(crc, chunk)
    return crc


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
    return restore_inventory_into(store, inv, t_us, topology, report, t0)


def restore_inventory_into(store: ObjStore, inv: Inventory, t_us: int, topology: Topology,
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
