"""Retention: which automated backup objects no restorable point needs (pure planner),
and a pass that applies it to a store.

The window is [now - retention, now]; `now` is always explicit (the uploader passes the
wall clock, tests pass their own scaled days). Per PG the *base* is the newest base image
(full snapshot or incremental image) created at or before the window start: its LSN is
at most the VDL at the window start (it was uploaded then, and only records <= a known
VDL are uploaded), so restoring any point in the window starts from it or a later image.
Older images and log chunks ending at or below the base go. Without such an image
nothing of the PG goes. Extents (the parts of incremental images) go once no kept image
lists them and they are older than the window start (an image is written after its
extents: a young unlisted extent may belong to one being written); if an image of the PG
cannot be read, no extent of that PG goes.

Then, volume-wide:
- marks objects whose whole VDL range lies below the lowest LSN any restorable point can
  still have (every PG's lowest restorable LSN, after the deletes above) map only
  instants nothing can restore any more; older marks keys without a range are kept;
- PG manifests of node generations with no object left in that PG, except the newest
  per PG (restore reads the layout from one);
- node registrations older than the newest generation of the same node (fencing only
  looks for a newer generation than one's own).
Manual snapshots are self-contained (their own pages, LSN and time in the manifest) and
persist until deleted: nothing here touches `manual/`, nor unknown objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import structlog

from . import chunks, images
from .catalog import catalog
from .layout import Obj
from .objstore import ObjStore

log = structlog.get_logger("tidemark.backup.retention")

MIN_DAYS, MAX_DAYS = 1, 35


def check_days(days: float) -> float:
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"backup retention must be {MIN_DAYS}..{MAX_DAYS} days, got {days}")
    return days


def bases(objs: Iterable[Obj], window_start: float) -> dict[int, Obj]:
    """Per PG, the newest base image created at or before the window start."""
    out: dict[int, Obj] = {}
    for pg, cat in catalog(list(objs)).items():
        old = [s for s in cat.snaps if s.mtime <= window_start]
        if old:
            out[pg] = max(old, key=lambda s: (s.start, s.mtime))
    return out


def plan_deletes(objs: list[Obj], now: float, retention_s: float, pgs: set[int] | None = None,
                 exclude: frozenset[str] = frozenset(),
                 refs: Mapping[str, Sequence[str] | None] | None = None) -> list[str]:
    """Keys no restorable point of [now - retention_s, now] needs. `pgs` limits the
    per-PG part (a node prunes the PGs it uploads); `exclude` are base images that must
    not serve as a base (failed verification); `refs` maps each incremental image to
    the extent keys it lists (None: unreadable; without `refs` no extent goes)."""
    window_start = now - retention_s
    candidates = [o for o in objs if o.key not in exclude]
    out: set[str] = set()
    for pg, base in bases(candidates, window_start).items():
        if pgs is not None and pg not in pgs:
            continue
        cat = catalog([o for o in objs if o.pg == pg and o.kind in ("snap", "image", "chunk")])[pg]
        out.update(s.key for s in cat.snaps if s.start < base.start)
        out.update(c.key for c in cat.chunks if c.end <= base.start)
    out.update(contained([o for o in objs if o.key not in out], pgs, exclude))
    if refs is not None:
        out.update(_extent_deletes([o for o in objs if o.key not in out], window_start, pgs, refs))
    kept = [o for o in objs if o.key not in out]
    out.update(_marks_deletes(kept))
    out.update(_manifest_deletes(kept))
    out.update(_registration_deletes(kept))
    return sorted(out)


def contained(objs: list[Obj], pgs: set[int] | None = None,
              exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """Chunks whose range lies inside another chunk of the same PG and uploader (an
    uploader extends its own last empty chunk by writing one that covers both): chunk ->
    the chunk holding all of it. `exclude`: chunks not trusted to hold anything."""
    out: dict[str, str] = {}
    groups: dict[tuple[int, str, int], list[Obj]] = {}
    for o in objs:
        if o.kind == "chunk" and (pgs is None or o.pg in pgs):
            groups.setdefault((o.pg, o.node, o.gen), []).append(o)
    for group in groups.values():
        best: Obj | None = None  # the trusted chunk reaching furthest so far
        for c in sorted(group, key=lambda o: (o.start, -o.end)):
            if best is not None and c.end <= best.end:
                out[c.key] = best.key  # best.start <= c.start: sorted by start
            elif c.key not in exclude:
                best = c
    return out


def _extent_deletes(kept: list[Obj], window_start: float, pgs: set[int] | None,
                    refs: Mapping[str, Sequence[str] | None]) -> list[str]:
    listed: set[str] = set()
    unreadable: set[int] = set()
    for o in kept:
        if o.kind == "image":
            got = refs.get(o.key)
            if got is None:
                unreadable.add(o.pg)  # its extents are unknown: keep the PG's extents
            else:
                listed.update(got)
    return [o.key for o in kept if o.kind == "extent" and (pgs is None or o.pg in pgs)
            and o.pg not in unreadable and o.key not in listed and o.mtime <= window_start]


def restorable_floor(objs: list[Obj]) -> int | None:
    """The lowest LSN a restorable point can have: no point below some PG's lowest
    restorable LSN is restorable (a point needs every PG). None if a PG known here has
    no restorable interval (nothing is restorable: keep every mark)."""
    lows = []
    for cat in catalog(objs).values():
        if not cat.snaps and not cat.chunks:
            continue  # only stray extents: no PG data to restore from
        iv = cat.intervals()
        if not iv:
            return None
        lows.append(iv[0][0])
    return max(lows) if lows else None


def _marks_deletes(objs: list[Obj]) -> list[str]:
    floor = restorable_floor(objs)
    if floor is None:
        return []
    # end < 0: an older key without its VDL range, kept (it could hold any mark).
    return [o.key for o in objs if o.kind == "marks" and 0 <= o.end < floor]


def _manifest_deletes(objs: list[Obj]) -> list[str]:
    used = {(o.pg, o.node, o.gen) for o in objs if o.kind in ("snap", "image", "extent", "chunk")}
    newest: dict[int, Obj] = {}
    for o in objs:
        if o.kind == "manifest" and (o.pg not in newest or (o.mtime, o.gen) > (newest[o.pg].mtime, newest[o.pg].gen)):
            newest[o.pg] = o
    return [o.key for o in objs if o.kind == "manifest" and (o.pg, o.node, o.gen) not in used
            and newest[o.pg].key != o.key]


def _registration_deletes(objs: list[Obj]) -> list[str]:
    newest: dict[str, int] = {}
    for o in objs:
        if o.kind == "node":
            newest[o.node] = max(newest.get(o.node, 0), o.gen)
    return [o.key for o in objs if o.kind == "node" and o.gen < newest[o.node]]


def _intact(store: ObjStore, base: Obj) -> bool:
    """The base image decodes and so does every extent it lists."""
    try:
        images.load_base(store, base)
        return True
    except (chunks.BadObject, KeyError, ValueError):
        return False


def _chunk_intact(store: ObjStore, key: str) -> bool:
    try:
        chunks.decode_chunk_fast(store.get(key))
        return True
    except (chunks.BadObject, KeyError, ValueError):
        return False


# Images are immutable (keys are never reused), so a pass every 30 s need not read a
# window's worth of them again: their extent lists, by (store url, key).
_REFS: dict[tuple[str, str], list[str]] = {}
_REFS_MAX = 100_000


def read_refs(store: ObjStore, objs: list[Obj], pgs: set[int] | None = None) -> dict[str, list[str] | None]:
    """Extent keys of every incremental image (of `pgs`); None for one that does not
    decode or vanished. A missing key (sealed.MissingKey) raises: the pass deletes nothing."""
    if len(_REFS) > _REFS_MAX:
        _REFS.clear()
    out: dict[str, list[str] | None] = {}
    for o in objs:
        if o.kind != "image" or (pgs is not None and o.pg not in pgs):
            continue
        cached = (store.url, o.key)
        if cached in _REFS:
            out[o.key] = _REFS[cached]
            continue
        try:
            out[o.key] = _REFS[cached] = images.image_refs(store, o)
        except (chunks.BadObject, KeyError, ValueError):
            out[o.key] = None  # not cached: a later pass reads it again
    return out


def apply(store: ObjStore, now: float, retention_s: float, pgs: set[int] | None = None,
          verify: bool = True) -> list[str]:
    """One retention pass: list, read the images' extent lists, plan, delete. A base
    image that fails its checks is not trusted as a base (the older chain stays,
    restore can fall back to it); the plan is made again without it."""
    objs = store.list("")
    refs = read_refs(store, objs, pgs)
    exclude: set[str] = {k for k, v in refs.items() if v is None}
    while True:
        deletes = plan_deletes(objs, now, retention_s, pgs, frozenset(exclude), refs)
        if not verify or not deletes:
            break
        # Only bases that something is about to be dropped for are checked (once: after
        # the drop, the next pass finds nothing older to delete).
        gone = set(deletes)
        pruned = {o.pg for o in objs if o.key in gone and o.kind in ("snap", "image", "extent", "chunk")}
        chosen = bases([o for o in objs if o.key not in exclude], now - retention_s)
        bad = {b.key for pg, b in chosen.items() if pg in pruned and not _intact(store, b)}
        # A chunk dropped for one that contains it: that one must decode.
        held = contained(objs, pgs, frozenset(exclude))
        holders = {held[k] for k in gone if k in held} - gone
        bad |= {k for k in holders if not _chunk_intact(store, k)}
        if not bad:
            break
        log.warning("backup_retention_bad_base", keys=sorted(bad))
        exclude |= bad
    for key in deletes:
        store.delete(key)
    return deletes
