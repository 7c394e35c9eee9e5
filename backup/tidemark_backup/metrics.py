"""Backup storage metrics as the Aurora backup article defines them (pure), plus their
OpenTelemetry export.

- VolumeBytesUsed: bytes of allocated (non-zero) pages; deleting rows rewrites pages and
  does not shrink it, freeing whole pages (dropping a table) does. Taken from each PG's
  newest base image (automated or manual).
- BackupRetentionPeriodStorageUsed: bytes of the automated backup: base images (full
  snapshots, incremental images and the extents they share, each stored once) and
  change records (log chunks) kept for the retention window, plus the time marks.
- SnapshotStorageUsed: bytes of manual snapshots older than the retention window
  (manual snapshots inside it are free).
- TotalBackupStorageBilled: BackupRetentionPeriodStorageUsed + SnapshotStorageUsed -
  free tier (100% of VolumeBytesUsed), never below 0.
"""

from __future__ import annotations

import json
import time

from .layout import Obj
from .objstore import ObjStore

SNAP_PAGE_OVERHEAD = 8  # u64 page number per stored page


def manual_snapshots(store: ObjStore, objs: list[Obj]) -> list[dict]:
    by_name: dict[str, list[Obj]] = {}
    for o in objs:
        if o.kind == "manual":
            by_name.setdefault(o.name, []).append(o)
    out = []
    for _name, items in sorted(by_name.items()):
        man = [o for o in items if o.key.endswith("manifest.json")]
        if not man:
            continue  # incomplete (manifest is written last)
        try:
            info = json.loads(store.get(man[0].key))
        except (KeyError, ValueError):
            continue
        info["stored_bytes"] = sum(o.size for o in items)
        out.append(info)
    return out


def compute(objs: list[Obj], manual: list[dict], page_size: int | None, retention_s: float,
            now: float | None = None, window: tuple[int | None, int | None] = (None, None),
            node_errors: list[str] | None = None) -> dict:
    now = time.time() if now is None else now
    parts = {kind: sum(o.size for o in objs if o.kind == kind)
             for kind in ("snap", "image", "extent", "chunk", "marks")}
    brpsu = sum(parts.values())
    window_start = now - retention_s
    ssu = sum(m["volume_bytes"] for m in manual if m.get("created", now) < window_start)
    volume = 0
    if page_size:
        newest: dict[int, Obj] = {}
        for o in objs:
            if o.is_base and (o.pg not in newest or o.start > newest[o.pg].start):
                newest[o.pg] = o
        # An image's key has its page count; a full snapshot's size gives it.
        volume = sum((o.pages if o.kind == "image" else o.size // (page_size + SNAP_PAGE_OVERHEAD))
                     * page_size for o in newest.values())
        if manual:
            latest_manual = max(manual, key=lambda m: m.get("created", 0))
            if latest_manual.get("created", 0) > max((o.mtime for o in newest.values()), default=0):
                volume = latest_manual["volume_bytes"]
    last_upload = max((o.mtime for o in objs if o.kind != "unknown"), default=None)
    first, latest = window
    return {
        "firstRecoverableTime": first,
        "latestRestorableTime": latest,
        "lastSuccessfulUpload": last_upload,
        "lastError": (node_errors or [None])[-1],
        "BackupRetentionPeriodStorageUsed": brpsu,
        "SnapshotStorageUsed": ssu,
        "TotalBackupStorageBilled": max(0, brpsu + ssu - volume),
        "VolumeBytesUsed": volume,
        # BackupRetentionPeriodStorageUsed's parts: base images (full snapshots, and
        # incremental images with their extents), change records (log chunks), VDL marks.
        "baseImageBytes": parts["snap"] + parts["image"] + parts["extent"],
        "changeRecordBytes": parts["chunk"],
        "marksBytes": parts["marks"],
        "objects": len(objs),
        "manualSnapshots": len(manual),
    }


def export_otel(values: dict, meter_name: str = "tidemark.backup") -> None:
    """Publish the numeric values as OpenTelemetry observable gauges."""
    from opentelemetry import metrics
    from opentelemetry.metrics import Observation

    meter = metrics.get_meter(meter_name)
    for key, value in values.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            meter.create_observable_gauge(
                f"tidemark.backup.{key}",
                callbacks=[lambda _opts, v=value: [Observation(v)]],
            )
