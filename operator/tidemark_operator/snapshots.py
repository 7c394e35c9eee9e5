"""AuroraSnapshot: a manual snapshot of an AuroraCluster's backup, created through the
same code as `tidemark snapshot create` and deleted with the resource (finalizer).
Runs in kopf's handler threads (sync handlers), never on its event loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from . import backupops as ops
from .backupspec import SNAPSHOT_PLURAL, BackupSpec, StoreRef
from .model import GROUP, PLURAL, VERSION

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


def patch_status(api: client.ApiClient, body: Mapping[str, Any], status: Mapping[str, Any]) -> None:
    meta = body["metadata"]
    client.CustomObjectsApi(api).patch_namespaced_custom_object_status(
        GROUP, VERSION, meta["namespace"], SNAPSHOT_PLURAL, meta["name"], {"status": dict(status)},
        _request_timeout=10)


def source_ref(api: client.ApiClient, ns: str, cluster: str) -> StoreRef:
    try:
        ac = client.CustomObjectsApi(api).get_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, cluster, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            raise SnapshotFailed("ClusterNotFound", f"AuroraCluster {cluster} does not exist") from exc
        raise
    b = BackupSpec.from_spec(ac.get("spec") or {})
    if not b.enabled or b.store is None:
        raise SnapshotFailed("BackupNotEnabled", f"AuroraCluster {cluster} has no spec.backup enabled")
    return b.store


def create(api: client.ApiClient, core: Any, body: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """Pending -> Ready (returns the status) or raises SnapshotFailed / another error."""
    from tidemark_backup.cli import create_manual_snapshot
    from tidemark_backup.restore import RestoreError, parse_time

    meta, spec = body["metadata"], body.get("spec") or {}
    ns, cluster = meta["namespace"], spec["cluster"]
    name = bucket_name(body)
    ref = source_ref(api, ns, cluster)
    patch_status(api, body, {"phase": "Pending", "cluster": cluster, "snapshotName": name,
                             "message": "reading the cluster's backup", **_ref_status(ref)})
    event("Normal", "SnapshotStarted", f"creating manual snapshot {name} of {cluster} in {ref.url}")
    try:
        store = ops.open_ref(core, ns, ref)
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


def delete(core: Any, body: Mapping[str, Any], event: Event) -> None:
    """Delete the snapshot's objects, using the store recorded in status (the cluster may
    be gone already). Nothing was created: nothing to do."""
    from tidemark_backup.cli import delete_manual_snapshot

    st = body.get("status") or {}
    if not st.get("snapshotName") or not st.get("target"):
        return
    ref = StoreRef(st["target"], st.get("endpoint"), st.get("credentialsSecret"))
    store = ops.open_ref(core, body["metadata"]["namespace"], ref)
    found = delete_manual_snapshot(store, st["snapshotName"])
    event("Normal", "SnapshotDeleted", f"deleted snapshot {st['snapshotName']} from {ref.url}"
          + ("" if found else " (it was not there)"))
