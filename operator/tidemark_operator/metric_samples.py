"""The operator's per-cluster gauges, from an AuroraCluster's status (pure).

One gauge per quantity, named by its unit (no gauge with a `what` label). GAUGES maps
each OpenTelemetry instrument name to (unit, description); the Prometheus exporter adds
the unit suffix (`ms` -> `_milliseconds`, `s` -> `_seconds`, `By` -> `_bytes`) unless the
name already ends with it, so every name here is also its exported name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from .backup_health import CONDITION as BACKUP_HEALTHY
from .backup_health import parse_time

Labels = dict[str, str]
Sample = tuple[str, float, Labels]

GAUGES: dict[str, tuple[str, str]] = {
    "tidemark_cluster_pgs": ("", "protection groups of the volume"),
    "tidemark_cluster_writable_pgs": ("", "PGs with a write quorum (>= 4/6 healthy segments)"),
    "tidemark_cluster_full_pgs": ("", "PGs with all 6 segments healthy"),
    "tidemark_cluster_pg_healthy_segments": ("", "healthy segments of one PG (label pg)"),
    "tidemark_cluster_ready_nodes": ("", "storage pods answering"),
    "tidemark_cluster_planned_nodes": ("", "storage pods the placement names"),
    "tidemark_cluster_vdl": ("", "highest volume durable LSN seen"),
    "tidemark_cluster_created_timestamp_seconds": ("s", "the AuroraCluster's creationTimestamp"),
    "tidemark_cluster_ready": ("", "1 when the Ready condition is True"),
    "tidemark_cluster_degraded": ("", "1 when the Degraded condition is True"),
    "tidemark_cluster_repairing": ("", "1 while the operator repairs segments (Progressing/Repairing)"),
    "tidemark_cluster_backup_healthy": ("", "1 when the BackupHealthy condition is True"),
    "tidemark_cluster_backup_last_upload_timestamp_seconds": ("s", "time of the newest uploaded object"),
    "tidemark_cluster_backup_first_recoverable_timestamp_seconds": ("s", "earliest restorable time"),
    "tidemark_cluster_backup_latest_restorable_timestamp_seconds": ("s", "latest restorable time"),
    "tidemark_cluster_backup_restorable_window_seconds": ("s", "latest minus earliest restorable time"),
    "tidemark_cluster_backup_retention_seconds": ("s", "spec.backup.retentionDays in seconds"),
    "tidemark_cluster_backup_retention_storage_bytes": ("By", "BackupRetentionPeriodStorageUsed"),
    "tidemark_cluster_backup_snapshot_storage_bytes": ("By", "SnapshotStorageUsed"),
    "tidemark_cluster_backup_billed_bytes": ("By", "TotalBackupStorageBilled"),
    "tidemark_cluster_volume_used_bytes": ("By", "VolumeBytesUsed"),
    "tidemark_cluster_instance_lag_milliseconds": ("ms", "replication lag of one instance (labels instance, role)"),
    "tidemark_cluster_instance_serving": ("", "1 when the instance serves (labels instance, role)"),
}
_BACKUP_BYTES = {
    "BackupRetentionPeriodStorageUsed": "tidemark_cluster_backup_retention_storage_bytes",
    "SnapshotStorageUsed": "tidemark_cluster_backup_snapshot_storage_bytes",
    "TotalBackupStorageBilled": "tidemark_cluster_backup_billed_bytes",
    "VolumeBytesUsed": "tidemark_cluster_volume_used_bytes",
}
_BACKUP_TIMES = {
    "lastSuccessfulUpload": "tidemark_cluster_backup_last_upload_timestamp_seconds",
    "firstRecoverableTime": "tidemark_cluster_backup_first_recoverable_timestamp_seconds",
    "latestRestorableTime": "tidemark_cluster_backup_latest_restorable_timestamp_seconds",
}


def _condition(status: Mapping[str, Any], type_: str) -> bool | None:
    for c in status.get("conditions") or []:
        if c.get("type") == type_:
            return c.get("status") == "True"
    return None


def _ratio(text: Any) -> tuple[int, int] | None:
    try:
        a, b = str(text).split("/")
        return int(a), int(b)
    except ValueError:
        return None


def _pg_samples(status: Mapping[str, Any]) -> Iterator[Sample]:
    segments = status.get("segments") or {}
    for pg, n in sorted(segments.items(), key=lambda kv: int(kv[0])):
        yield "tidemark_cluster_pg_healthy_segments", float(n), {"pg": str(pg)}
    if "writablePGs" in status:
        yield "tidemark_cluster_writable_pgs", float(status["writablePGs"]), {}
    if (pgs := _ratio(status.get("healthyPGs"))) is not None:
        yield "tidemark_cluster_full_pgs", float(pgs[0]), {}
        yield "tidemark_cluster_pgs", float(pgs[1]), {}
    if (nodes := _ratio(status.get("readyNodes"))) is not None:
        yield "tidemark_cluster_ready_nodes", float(nodes[0]), {}
        yield "tidemark_cluster_planned_nodes", float(nodes[1]), {}
    yield "tidemark_cluster_vdl", float(status.get("vdl") or 0), {}


def _condition_samples(status: Mapping[str, Any]) -> Iterator[Sample]:
    for name, type_ in (("tidemark_cluster_ready", "Ready"), ("tidemark_cluster_degraded", "Degraded"),
                        ("tidemark_cluster_backup_healthy", BACKUP_HEALTHY)):
        value = _condition(status, type_)
        if value is not None:
            yield name, float(value), {}
    progressing = next((c for c in status.get("conditions") or [] if c.get("type") == "Progressing"), {})
    repairing = progressing.get("status") == "True" and progressing.get("reason") == "Repairing"
    yield "tidemark_cluster_repairing", float(repairing), {}


def _backup_samples(backup: Mapping[str, Any]) -> Iterator[Sample]:
    for key, name in _BACKUP_BYTES.items():
        if isinstance(backup.get(key), int | float) and not isinstance(backup.get(key), bool):
            yield name, float(backup[key]), {}
    times = {key: parse_time(backup.get(key)) for key in _BACKUP_TIMES}
    for key, name in _BACKUP_TIMES.items():
        if (t := times[key]) is not None:
            yield name, t, {}
    first, latest = times["firstRecoverableTime"], times["latestRestorableTime"]
    if first is not None and latest is not None:
        yield "tidemark_cluster_backup_restorable_window_seconds", max(0.0, latest - first), {}
    if isinstance(backup.get("retentionDays"), int | float):
        yield "tidemark_cluster_backup_retention_seconds", float(backup["retentionDays"]) * 86400.0, {}


def _instance_samples(status: Mapping[str, Any]) -> Iterator[Sample]:
    for item in status.get("instances") or []:
        labels = {"instance": str(item.get("name", "")), "role": str(item.get("role", ""))}
        yield "tidemark_cluster_instance_serving", float(bool(item.get("serving"))), labels
        if isinstance(item.get("lagMs"), int | float):
            yield "tidemark_cluster_instance_lag_milliseconds", float(item["lagMs"]), labels


def samples(namespace: str, cluster: str, status: Mapping[str, Any],
            created: str | None = None) -> list[Sample]:
    """Every (gauge, value, labels) of one cluster; labels carry namespace and cluster.
    CREATED: the object's metadata.creationTimestamp."""
    base = {"namespace": namespace, "cluster": cluster}
    out: list[Sample] = []
    if (t := parse_time(created)) is not None:
        out.append(("tidemark_cluster_created_timestamp_seconds", t, dict(base)))
    parts = [_pg_samples(status), _condition_samples(status), _instance_samples(status)]
    if isinstance(status.get("backup"), Mapping):
        parts.append(_backup_samples(status["backup"]))
    for part in parts:
        out += [(name, value, {**base, **labels}) for name, value, labels in part]
    return out
