"""AuroraSnapshot: a manual snapshot of an AuroraCluster's backup, created through the
same code as `tidemark snapshot create` and deleted with the resource (finalizer).
Runs in kopf's handler threads (sync handlers), never on its event loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from tidemark_restore.inventory import RestoreError, parse_time
from tidemark_restore.snapshots import create_manual_snapshot, delete_manual_snapshot

from .backupspec import SNAPSHOT_PLURAL, BackupSpec, StoreRef
from .kube import TIMEOUT, Kube
from .model import GROUP, VERSION
from .stores import open_ref

Event = Callable[[str, str, str], None]


class SnapshotFailed(Exception):
    """A reason (CamelCase) and a message for status and events."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def bucket_name(body: Mapping[str, Any]) -> str:
    """The snapshot's name in the bucket: unique per resource (a re-created resource of
    the same name must not meet its predecessor's objects)."""
    meta = body["metadata"]
    return f"{meta['namespace']}-{meta['name']}-{meta['uid'][:8]}"


def patch_status(kube: Kube, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    kube.custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], SNAPSHOT_PLURAL, meta["name"], {"status": dict(status)},
        _request_timeout=TIMEOUT)


def source_ref(kube: Kube, ns: str, cluster: str) -> StoreRef:
    ac = kube.cluster(ns, cluster)
    if ac is None:
        raise SnapshotFailed("ClusterNotFound", f"AuroraCluster {cluster} does not exist")
    b = BackupSpec.from_spec(ac.get("spec") or {})
    if not b.enabled or b.store is None:
        raise SnapshotFailed("BackupNotEnabled", f"AuroraCluster {cluster} has no spec.backup enabled")
    return b.store


def create(kube: Kube, body: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """Pending -> Ready (returns the status) or raises SnapshotFailed / another error."""
    meta, spec = body["metadata"], body.get("spec") or {}
    ns, cluster = meta["namespace"], spec["cluster"]
    name = bucket_name(body)
    ref = source_ref(kube, ns, cluster)
    patch_status(kube, body, {"phase": "Pending", "cluster": cluster, "snapshotName": name,
                             "message": "reading the cluster's backup", **_ref_status(ref)})
    event("Normal", "SnapshotStarted", f"creating manual snapshot {name} of {cluster} in {ref.url}")
    try:
        store = open_ref(kube.core, ns, ref)
        t_us = parse_time(spec["pointInTime"]) if spec.get("pointInTime") else None
        info = create_manual_snapshot(store, name, t_us)
    except RestoreError as exc:
        raise SnapshotFailed("NotRestorable", str(exc)) from exc
    status = {"phase": "Ready", "cluster": cluster, "snapshotName": name, **_ref_status(ref),
              "snapshotTime": info["time"], "lsn": info["lsn"], "pages": info["pages"],
              "sizeBytes": info["bytes"], "volumeBytes": info["volume_bytes"],
              "createdAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info["created"])),
              "message": f"{info['pages']} pages at LSN {info['lsn']}"}
    event("Normal", "SnapshotReady", f"snapshot {name}: {info['pages']} pages at LSN {info['lsn']} "
          f"({info['time']}), {info['bytes']} bytes")
    return status


def _ref_status(ref: StoreRef) -> dict[str, Any]:
    return {"target": ref.url, **({"endpoint": ref.endpoint} if ref.endpoint else {}),
            **({"credentialsSecret": ref.credentials_secret} if ref.credentials_secret else {})}


def delete(kube: Kube, body: Mapping[str, Any], event: Event) -> None:
    """Delete the snapshot's objects, using the store recorded in status (the cluster may
    be gone already). Nothing was created: nothing to do."""
    st = body.get("status") or {}
    if not st.get("snapshotName") or not st.get("target"):
        return
    ref = StoreRef(st["target"], st.get("endpoint"), st.get("credentialsSecret"))
    store = open_ref(kube.core, body["metadata"]["namespace"], ref)
    found = delete_manual_snapshot(store, st["snapshotName"])
    event("Normal", "SnapshotDeleted", f"deleted snapshot {st['snapshotName']} from {ref.url}"
          + ("" if found else " (it was not there)"))
