"""What a backup can restore (pure): per-PG chains of base image (a full snapshot or an
incremental image, images.py) + contiguous log chunks, and the volume-wide restorable
LSN intervals mapped to time through VDL marks."""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass, field

from .layout import Obj


@dataclass
class PgCatalog:
    pg: int
    snaps: list[Obj] = field(default_factory=list)  # base images (snap, image), ascending lsn
    chunks: list[Obj] = field(default_factory=list)  # ascending start
    extents: list[Obj] = field(default_factory=list)  # parts of incremental images

    def bases(self) -> list[int]:
        """LSNs a restore can start from: snapshots, and 0 (the empty volume) if the
        log reaches back to the beginning."""
        out = sorted({s.start for s in self.snaps})
        if any(c.start == 0 for c in self.chunks) and 0 not in out:
            out.insert(0, 0)
        return out

    def reach(self, base: int) -> int:
        """Highest LSN the chunks cover contiguously from `base`."""
        pos = base
        for c in self.chunks:  # sorted by start
            if c.start > pos:
                break
            if c.end > pos:
                pos = c.end
        return pos

    def intervals(self) -> list[tuple[int, int]]:
        """Restorable [lo, hi] LSN intervals of this PG, merged."""
        iv = sorted((b, self.reach(b)) for b in self.bases())
        out: list[tuple[int, int]] = []
        for lo, hi in iv:
            if out and lo <= out[-1][1]:
                out[-1] = (out[-1][0], max(out[-1][1], hi))
            else:
                out.append((lo, hi))
        return out

    def chain(self, target: int) -> tuple[int, list[Obj]] | None:
        """(base lsn, chunks to apply) to rebuild the PG at `target`, from the latest
        base at or below it; None if no base reaches `target`."""
        for base in reversed(self.bases()):
            if base > target or self.reach(base) < target:
                continue
            pos, used = base, []
            candidates = [c for c in self.chunks if c.end > base and c.start < target]
            while pos < target:
                step = [c for c in candidates if c.start <= pos < c.end]
                if not step:
                    break
                best = max(step, key=lambda c: c.end)
                used.append(best)
                pos = best.end
            if pos >= target:
                return base, used
        return None


def catalog(objs: list[Obj]) -> dict[int, PgCatalog]:
    pgs: dict[int, PgCatalog] = defaultdict(lambda: PgCatalog(-1))
    for o in objs:
        if o.kind in ("snap", "image", "chunk", "extent"):
            cat = pgs[o.pg]
            cat.pg = o.pg
            (cat.snaps if o.is_base else cat.chunks if o.kind == "chunk" else cat.extents).append(o)
    for cat in pgs.values():
        cat.snaps.sort(key=lambda o: o.start)
        cat.chunks.sort(key=lambda o: (o.start, -o.end))
    return dict(pgs)


def intersect(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def volume_intervals(cats: dict[int, PgCatalog], pg_count: int) -> list[tuple[int, int]]:
    """LSN intervals at which every PG of the volume is restorable."""
    out: list[tuple[int, int]] | None = None
    for pg in range(pg_count):
        cat = cats.get(pg)
        iv = cat.intervals() if cat else []
        out = iv if out is None else intersect(out, iv)
    return out or []


class Timeline:
    """VDL marks (vdl, unix µs), deduplicated and sorted by time."""

    def __init__(self, marks: list[tuple[int, int]]) -> None:
        best: dict[int, int] = {}
        for vdl, t in marks:
            if vdl not in best or t < best[vdl]:
                best[vdl] = t
        pairs = sorted(best.items(), key=lambda p: (p[1], p[0]))
        # VDL only grows: keep the marks consistent with that order.
        self.marks: list[tuple[int, int]] = []
        for vdl, t in pairs:
            if not self.marks or vdl > self.marks[-1][0]:
                self.marks.append((vdl, t))
        self.times = [t for _v, t in self.marks]

    def lsn_at(self, t_us: int) -> int | None:
        """VDL at time t: the last mark at or before it (None: before the first mark)."""
        i = bisect_right(self.times, t_us)
        return self.marks[i - 1][0] if i else None

    def restorable(self, intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Marks (vdl, t) whose VDL lies in a restorable interval."""
        out = []
        for vdl, t in self.marks:
            if any(lo <= vdl <= hi for lo, hi in intervals):
                out.append((vdl, t))
        return out
