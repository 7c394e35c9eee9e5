"""Point-in-time restore: read the bucket, map T to an LSN through the VDL marks, rebuild
every PG's pages at that LSN in parallel (latest snapshot at or below it + log chunks),
and load them into a NEW playground fleet as full-page images."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_redo
from tidemark_protocol.records import Record, RecordFlags

from . import chunks, layout
from .catalog import PgCatalog, Timeline, catalog, volume_intervals
from .layout import Obj
from .objstore import ObjStore


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


async def load_into_new_fleet(directory: Path, lay: VolumeLayout, pages: dict[int, bytes],
                              backup: str | None = None, base_ip: str | None = None,
                              nodes_per_zone: int = 2, on_page: Callable[[int], None] = lambda n: None,
                              concurrency: int = 32, pages_per_commit: int = 8):
    """Start a new fleet in `directory` and commit every page as a full image."""
    from tidemark_compute.topology import save_topology
    from tidemark_compute.writer import Writer
    from tidemark_playground import fleet as fleet_mod
    from tidemark_protocol.writer_core import Change

    kwargs = {"backup": backup} if backup else {}
    fleet, topology = await fleet_mod.up(directory, nodes_per_zone, lay.pg_count, lay.pages_per_pg,
                                         lay.page_size, base_ip or random_base_ip(), **kwargs)
    writer = await Writer.open(topology)
    save_topology(directory, topology)
    try:
        items = sorted(pages.items())
        batches = [items[i : i + pages_per_commit] for i in range(0, len(items), pages_per_commit)]
        sem = asyncio.Semaphore(concurrency)

        async def commit(batch) -> None:
            async with sem:
                await writer.commit([Change(p, img, full_image=True) for p, img in batch])
                on_page(len(batch))

        await asyncio.gather(*(commit(b) for b in batches))
        vdl = writer.vdl
    finally:
        await writer.close()
    return fleet, topology, vdl


def restore(url_store: ObjStore, t_us: int, directory: Path, backup: str | None = None,
            base_ip: str | None = None, progress: bool = True) -> dict:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    t0 = time.monotonic()
    inv = load_inventory(url_store)
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup: nothing to restore")
    target = inv.lsn_for(t_us)
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=not progress) as bar:
        pg_task = bar.add_task(f"rebuild PGs at LSN {target}", total=inv.layout.pg_count)
        pages = rebuild_volume(url_store, inv, target, on_pg=lambda _pg: bar.advance(pg_task))
        t_rebuild = time.monotonic() - t0
        load_task = bar.add_task("load pages into the new fleet", total=len(pages))
        _fleet, topology, vdl = asyncio.run(load_into_new_fleet(
            directory, inv.layout, pages, backup, base_ip, on_page=lambda n: bar.advance(load_task, n)))
    return {
        "to_time": iso(t_us),
        "lsn": target,
        "pages": len(pages),
        "pgs": inv.layout.pg_count,
        "dir": str(directory),
        "nodes": topology.nodes,
        "new_vdl": vdl,
        "problems": inv.problems,
        "rebuild_s": round(t_rebuild, 3),
        "total_s": round(time.monotonic() - t0, 3),
        "backup": backup,
    }


__all__ = ["restore", "load_inventory", "rebuild_volume", "Inventory", "RestoreError", "parse_time",
           "iso", "layout"]
