"""A backup's recoverability window and storage metrics (`tidemark backup status`, the
operator's status.backup)."""

from __future__ import annotations

from tidemark_backup import metrics as metrics_mod
from tidemark_backup.objstore import ObjStore, open_store

from .inventory import iso, load_inventory


def status_of(url: str, endpoint: str | None = None, retention_days: float = 1.0,
              now: float | None = None) -> dict:
    return status_of_store(open_store(url, endpoint), retention_days, now)


def status_of_store(store: ObjStore, retention_days: float = 1.0, now: float | None = None) -> dict:
    """Recoverability window and storage metrics of the backup in STORE (also used by the
    operator, which opens the store with a Secret's credentials)."""
    inv = load_inventory(store)
    manual = metrics_mod.manual_snapshots(store, inv.objs)
    first, latest = inv.window()
    out = metrics_mod.compute(inv.objs, manual, inv.layout.page_size if inv.layout else None,
                              retention_days * 86400.0, now, (first, latest), inv.problems)
    out["firstRecoverableTime"] = iso(first)
    out["latestRestorableTime"] = iso(latest)
    lsu = out["lastSuccessfulUpload"]
    out["lastSuccessfulUpload"] = iso(int(lsu * 1e6)) if lsu else None
    out["problems"] = inv.problems
    out["restorableLsnIntervals"] = inv.intervals()
    return out
