"""Retention: which automated backup objects no restorable point needs (pure planner),
and a pass that applies it to a store.

The window is [now - retention, now]; `now` is always explicit (the uploader passes the
wall clock, tests pass their own scaled days). Per PG the *base* is the newest snapshot
created at or before the window start: its LSN is at most the VDL at the window start
(it was uploaded then, and only records <= a known VDL are uploaded), so restoring any
point in the window starts from it or a later snapshot. Older snapshots and log chunks
ending at or below the base go. Without such a snapshot nothing of the PG goes.

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

from collections.abc import Iterable

import structlog

from . import chunks
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
    """Per PG, the newest snapshot created at or before the window start."""
    out: dict[int, Obj] = {}
    for pg, cat in catalog(list(objs)).items():
        old = [s for s in cat.snaps if s.mtime <= window_start]
        if old:
            out[pg] = max(old, key=lambda s: (s.start, s.mtime))
    return out


def plan_deletes(objs: list[Obj], now: float, retention_s: float, pgs: set[int] | None = None,
                 exclude: frozenset[str] = frozenset()) -> list[str]:
    """Keys no restorable point of [now - retention_s, now] needs. `pgs` limits the
    per-PG part (a node prunes the PGs it uploads); `exclude` are snapshots that must
    not serve as a base (failed verification)."""
    window_start = now - retention_s
    candidates = [o for o in objs if o.key not in exclude]
    out: set[str] = set()
    for pg, base in bases(candidates, window_start).items():
        if pgs is not None and pg not in pgs:
            continue
        cat = catalog([o for o in objs if o.pg == pg and o.kind in ("snap", "chunk")])[pg]
        out.update(s.key for s in cat.snaps if s.start < base.start)
        out.update(c.key for c in cat.chunks if c.end <= base.start)
    kept = [o for o in objs if o.key not in out]
    out.update(_marks_deletes(kept))
    out.update(_manifest_deletes(kept))
    out.update(_registration_deletes(kept))
    return sorted(out)


def restorable_floor(objs: list[Obj]) -> int | None:
    """The lowest LSN a restorable point can have: no point below some PG's lowest
    restorable LSN is restorable (a point needs every PG). None if a PG known here has
    no restorable interval (nothing is restorable: keep every mark)."""
    lows = []
    for cat in catalog(objs).values():
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
    used = {(o.pg, o.node, o.gen) for o in objs if o.kind in ("snap", "chunk")}
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


def _intact(store: ObjStore, snap: Obj) -> bool:
    try:
        chunks.decode_snap(store.get(snap.key))
        return True
    except (chunks.BadObject, KeyError, ValueError):
        return False


def apply(store: ObjStore, now: float, retention_s: float, pgs: set[int] | None = None,
          verify: bool = True) -> list[str]:
    """One retention pass: list, plan, delete. A base snapshot that fails its checks
    is not trusted as a base (the older chain stays, restore can fall back to it); the
    plan is made again without it."""
    objs = store.list("")
    exclude: set[str] = set()
    while True:
        deletes = plan_deletes(objs, now, retention_s, pgs, frozenset(exclude))
        if not verify or not deletes:
            break
        # Only bases that something is about to be dropped for are checked (once: after
        # the drop, the next pass finds nothing older to delete).
        gone = set(deletes)
        pruned = {o.pg for o in objs if o.key in gone and o.kind in ("snap", "chunk")}
        chosen = bases([o for o in objs if o.key not in exclude], now - retention_s)
        bad = {b.key for pg, b in chosen.items() if pg in pruned and not _intact(store, b)}
        if not bad:
            break
        log.warning("backup_retention_bad_base", keys=sorted(bad))
        exclude |= bad
    for key in deletes:
        store.delete(key)
    return deletes
