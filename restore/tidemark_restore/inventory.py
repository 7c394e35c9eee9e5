"""Reading a backup: the inventory of the bucket (objects, layout, VDL marks, per-PG
catalogs), the restorable window, and every PG's pages rebuilt at an LSN (latest base
image at or below it, full or incremental + log chunks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tidemark_backup import chunks, images
from tidemark_backup.catalog import PgCatalog, Timeline, catalog, volume_intervals
from tidemark_backup.layout import Obj
from tidemark_backup.objstore import ObjStore
from tidemark_protocol.errors import UserError
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_redo
from tidemark_protocol.records import Record, RecordFlags


class RestoreError(UserError):
    """The backup cannot give what was asked (no restorable point, a time outside the window)."""


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
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise RestoreError(f"{text!r} is not an RFC 3339 time such as 2026-11-22T20:15:03Z") from exc
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
                    try:  # a full snapshot, or an image whose extents download in parallel
                        pages = images.load_base(store, s, pool.map, on_bytes)
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

