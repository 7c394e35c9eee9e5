"""spec.backup / spec.restore / AuroraSnapshot as typed values, the pods' backup
environment, and the restore status (pure: unit-tested without a cluster)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

SNAPSHOT_PLURAL = "aurorasnapshots"
SNAPSHOT_KIND = "AuroraSnapshot"
ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class StoreRef:
    """Where a backup lives: an s3:// URL (endpoint separate) and the Secret with keys."""

    url: str
    endpoint: str | None = None
    credentials_secret: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"target": self.url, "endpoint": self.endpoint, "credentialsSecret": self.credentials_secret}


def split_target(target: str, endpoint: str | None = None) -> tuple[str, str | None]:
    """(s3://bucket/prefix, endpoint) from either form the CRD accepts:
    `s3://bucket/prefix` (+ endpoint) or `http(s)://host:port/bucket/prefix` (path style).
    `file:///path` passes through (the playground's store; useful off-cluster)."""
    u = urlparse(target)
    if u.scheme in ("s3", "file"):
        return target, endpoint or None
    if u.scheme in ("http", "https"):
        parts = u.path.strip("/").split("/", 1)
        if not parts[0]:
            raise ValueError(f"backup target {target!r} names no bucket")
        prefix = parts[1] if len(parts) > 1 else ""
        return f"s3://{parts[0]}/{prefix}".rstrip("/"), f"{u.scheme}://{u.netloc}"
    raise ValueError(f"unsupported backup target {target!r}")


@dataclass(frozen=True)
class BackupSpec:
    enabled: bool
    store: StoreRef | None
    retention_days: int = 7

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BackupSpec:
        b = spec.get("backup") or {}
        if not b.get("enabled") or not b.get("target"):
            return cls(False, None, int(b.get("retentionDays", 7)))
        url, endpoint = split_target(str(b["target"]), b.get("endpoint"))
        return cls(True, StoreRef(url, endpoint, b.get("credentialsSecret")), int(b.get("retentionDays", 7)))


@dataclass(frozen=True)
class RestoreSpec:
    """spec.restore: the source (a backup target, or an AuroraCluster whose backup target
    is used) and the point in time (None: the latest restorable)."""

    source_cluster: str | None
    store: StoreRef | None
    point_in_time: str | None

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> RestoreSpec | None:
        r = spec.get("restore")
        if not r:
            return None
        src = r.get("source") or {}
        store = None
        if src.get("target"):
            url, endpoint = split_target(str(src["target"]), src.get("endpoint"))
            store = StoreRef(url, endpoint, src.get("credentialsSecret"))
        return cls(src.get("cluster") or None, store, r.get("pointInTime") or None)


def backup_env(backup: BackupSpec) -> list[dict[str, Any]]:
    """Environment of a storage pod for its uploader: endpoint as a value, the keys from
    the Secret (never copied into the pod spec)."""
    if not backup.enabled or backup.store is None:
        return []
    env: list[dict[str, Any]] = []
    if backup.store.endpoint:
        env.append({"name": "TIDEMARK_S3_ENDPOINT", "value": backup.store.endpoint})
    if backup.store.credentials_secret:
        for key in (ACCESS_KEY, SECRET_KEY):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": backup.store.credentials_secret, "key": key}}})
    return env


def backup_args(backup: BackupSpec) -> list[str]:
    if not backup.enabled or backup.store is None:
        return []
    return ["--backup", backup.store.url, "--backup-retention-days", str(backup.retention_days)]


def same_store(a: StoreRef | None, b: StoreRef | None) -> bool:
    """Two refs naming the same bucket prefix (a restored cluster must not back up into
    its source's prefix: two volumes' objects would mix)."""
    if a is None or b is None:
        return False
    return a.url.rstrip("/") == b.url.rstrip("/") and (a.endpoint or "") == (b.endpoint or "")


# -- restore progress in status.restore ---------------------------------------------------

RESTORE_DONE = "Done"


def restore_condition_fields(restore_status: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    """(restored?, reason, message) for the Restored condition."""
    st = restore_status or {}
    phase = st.get("phase") or "Validating"
    if phase == RESTORE_DONE:
        return True, "RestoreComplete", (f"restored {st.get('pages', 0)} pages at LSN {st.get('lsn')} "
                                         f"({st.get('pointInTime')})")
    if phase == "Failed":
        return False, "RestoreFailed", str(st.get("message") or "restore failed")
    return False, phase, str(st.get("message") or phase.lower())


def apply_restore_status(status: dict[str, Any], restore_status: Mapping[str, Any], generation: int,
                         old_conds: list[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """Overlay the restore on a computed cluster status: never Ready before the backup is
    fully loaded (phase Restoring/Failed), plus a Restored condition."""
    from .status import condition

    restored, reason, msg = restore_condition_fields(restore_status)
    conds = [c for c in status.get("conditions", []) if c["type"] != "Restored"]
    if not restored:
        conds = [c for c in conds if c["type"] != "Ready"]
        conds.insert(0, condition("Ready", False, "RestoreFailed" if reason == "RestoreFailed" else "Restoring",
                                  msg, generation, old_conds, now))
        status["phase"] = "Failed" if reason == "RestoreFailed" else "Restoring"
    conds.append(condition("Restored", restored, reason, msg, generation, old_conds, now))
    status["conditions"] = conds
    status["restore"] = dict(restore_status)
    return status


def progress_text(phase: str, done: int, total: int) -> str:
    what = {"inventory": "reading the backup's catalogue", "rebuild": "rebuilding PGs",
            "load": "loading pages"}.get(phase, phase)
    return f"{what}: {done}/{total}"
