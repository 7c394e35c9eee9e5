"""Retention (pure): which automated backup objects no restorable point needs.

The window is [now - retention, now]. Per PG the *base* is the newest snapshot created
at or before the window start: restoring any point in the window starts from it or a
later snapshot, so older snapshots and log chunks ending at or below its LSN go. Without
such a snapshot nothing of the PG goes. Manual snapshots, marks, registrations and
unknown objects are never deleted here.
"""

from __future__ import annotations

from .catalog import catalog
from .layout import Obj

MIN_DAYS, MAX_DAYS = 1, 35


def check_days(days: float) -> float:
    if not MIN_DAYS <= days <= MAX_DAYS:
        raise ValueError(f"backup retention must be {MIN_DAYS}..{MAX_DAYS} days, got {days}")
    return days


def plan_deletes(objs: list[Obj], now: float, retention_s: float, pgs: set[int] | None = None) -> list[str]:
    window_start = now - retention_s
    out: list[str] = []
    for pg, cat in catalog(objs).items():
        if pgs is not None and pg not in pgs:
            continue
        old = [s for s in cat.snaps if s.mtime <= window_start]
        if not old:
            continue
        base = max(s.start for s in old)
        out += [s.key for s in cat.snaps if s.start < base]
        out += [c.key for c in cat.chunks if c.end <= base]
    return sorted(out)
