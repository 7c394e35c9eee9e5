"""status.backup: one poll of a cluster's backup (recoverable window and storage metrics,
computed by the same code as `tidemark backup status`). Blocking: the backup daemon in
handlers.py runs it in a thread every POLL_INTERVAL seconds; the reconcile pass only
copies its last result, so an unreachable store never slows or fails a pass."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from tidemark_restore.status import status_of_store

from .backupspec import StoreRef
from .stores import open_ref

POLL_INTERVAL = float(os.environ.get("TIDEMARK_OPERATOR_BACKUP_POLL", "10"))
STATUS_KEYS = ("firstRecoverableTime", "latestRestorableTime", "lastSuccessfulUpload", "lastError",
               "BackupRetentionPeriodStorageUsed", "SnapshotStorageUsed", "TotalBackupStorageBilled",
               "VolumeBytesUsed")


def backup_block(out: Mapping[str, Any] | None, error: str | None, target: str, checked: str | None,
                 node_error: str | None = None) -> dict[str, Any]:
    """status.backup from the last poll (pure). A store error wins lastError; then the
    nodes' uploaders' last error; then the bucket's first problem."""
    st: dict[str, Any] = {"target": target, "lastChecked": checked, "state": "Active"}
    for k in STATUS_KEYS:
        st[k] = (out or {}).get(k)
    st["lastError"] = error or node_error or st["lastError"]
    return st


def poll(core: Any, ns: str, ref: StoreRef, retention_days: int,
         prev: Mapping[str, Any] | None) -> dict[str, Any]:
    """status.backup now; while the store is unreachable, the last known window and
    metrics (PREV) are kept and the error shows in lastError."""
    checked = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        store = open_ref(core, ns, ref)
        out, err = status_of_store(store, float(retention_days)), None
        problems = out.get("problems") or []
        out["lastError"] = problems[0] if problems else None
    except Exception as exc:  # noqa: BLE001 - any store failure is reported, not raised
        out, err = None, f"{type(exc).__name__}: {exc}"[:500]
    block = backup_block(out, err, ref.url, checked)
    if out is None:
        block.update({k: (prev or {}).get(k) for k in STATUS_KEYS if k != "lastError"})
    return block
