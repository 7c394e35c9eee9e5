"""`kubectl tidemark backup status` and `snapshot create|list|delete`: what the operator
already does, driven through its objects. A snapshot is an `AuroraSnapshot` resource (the
operator writes it to the cluster's backup and deletes its objects with it); backup status
is the cluster's `status.backup` and `BackupHealthy` condition (the operator's poll of the
store, the same code as `tidemark backup status`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from tidemark_operator.backup_health import CONDITION as BACKUP_HEALTHY
from tidemark_operator.backupspec import SNAPSHOT_KIND, SNAPSHOT_PLURAL
from tidemark_operator.model import GROUP, VERSION, cluster_labels
from tidemark_protocol.errors import UserError

from .cluster_view import condition_of
from .kube_target import TIMEOUT, Target


class SnapshotError(UserError):
    """A snapshot that failed or does not exist (one line for the user)."""


def backup_status(ac: Mapping[str, Any]) -> dict[str, Any]:
    """The `backup status` document: status.backup (camelCase, as `tidemark backup status`)
    with the cluster, whether it is enabled and the BackupHealthy condition."""
    meta, spec, status = ac["metadata"], ac.get("spec") or {}, ac.get("status") or {}
    enabled = bool((spec.get("backup") or {}).get("enabled"))
    if not enabled:
        raise UserError(f"AuroraCluster {meta['name']} has no spec.backup enabled: nothing is backed up")
    c = condition_of(status, BACKUP_HEALTHY)
    return {"cluster": meta["name"], "namespace": meta.get("namespace"), "enabled": enabled,
            "healthy": c.get("status") == "True", "reason": c.get("reason"), "message": c.get("message"),
            **(status.get("backup") or {})}


def default_snapshot_name(cluster: str, now: float) -> str:
    return f"{cluster}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}"


def snapshot_body(cluster: str, name: str, at: str | None) -> dict[str, Any]:
    """The AuroraSnapshot a user would apply by hand."""
    spec: dict[str, Any] = {"cluster": cluster}
    if at:
        spec["pointInTime"] = at
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": SNAPSHOT_KIND,
            "metadata": {"name": name, "labels": cluster_labels(cluster)}, "spec": spec}


def snapshot_row(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An AuroraSnapshot as the snapshot commands print it (snake_case, as `tidemark snapshot`)."""
    st, spec = obj.get("status") or {}, obj.get("spec") or {}
    return {"name": obj["metadata"]["name"], "cluster": spec.get("cluster"),
            "phase": st.get("phase", "Pending"), "point_in_time": spec.get("pointInTime"),
            "snapshot_time": st.get("snapshotTime"), "lsn": st.get("lsn"), "pages": st.get("pages"),
            "size_bytes": st.get("sizeBytes"), "volume_bytes": st.get("volumeBytes"),
            "snapshot_name": st.get("snapshotName"), "target": st.get("target"),
            "reason": st.get("reason"), "message": st.get("message"),
            "created": obj["metadata"].get("creationTimestamp")}


def _get_snapshot(target: Target, name: str) -> dict[str, Any] | None:
    try:
        return dict(target.custom.get_namespaced_custom_object(
            GROUP, VERSION, target.namespace, SNAPSHOT_PLURAL, name, _request_timeout=TIMEOUT))
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """CHECK's first truthy answer; a one-line error after TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise UserError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def create_snapshot(target: Target, cluster: str, name: str, at: str | None, wait: float | None) -> dict[str, Any]:
    """Create the AuroraSnapshot; with WAIT seconds, until it is Ready (a Failed one is an
    error with the operator's reason; the operator keeps retrying it)."""
    target.cluster(cluster)  # a clear error for a missing cluster
    try:
        target.custom.create_namespaced_custom_object(GROUP, VERSION, target.namespace, SNAPSHOT_PLURAL,
                                                      snapshot_body(cluster, name, at), _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            raise SnapshotError(f"AuroraSnapshot {name} exists already: pick another --name") from exc
        raise
    if wait is None:
        return snapshot_row(_get_snapshot(target, name) or snapshot_body(cluster, name, at))

    def settled() -> dict[str, Any] | None:
        obj = _get_snapshot(target, name)
        phase = ((obj or {}).get("status") or {}).get("phase")
        return obj if phase in ("Ready", "Failed") else None

    row = snapshot_row(wait_until(settled, wait, f"AuroraSnapshot {name} to be Ready"))
    if row["phase"] == "Failed":
        raise SnapshotError(f"snapshot {name} failed: {row['reason']}: {row['message']} "
                            "(the operator retries it; `snapshot delete` to give up)")
    return row


def delete_snapshot(target: Target, cluster: str, name: str, wait: float | None) -> None:
    """Delete the AuroraSnapshot NAME of CLUSTER (the operator's finalizer deletes its
    objects in the bucket); with WAIT seconds, until the resource is gone."""
    obj = _get_snapshot(target, name)
    if obj is None or (obj.get("spec") or {}).get("cluster") != cluster:
        raise SnapshotError(f"no AuroraSnapshot {name} of cluster {cluster} in namespace {target.namespace}")
    target.custom.delete_namespaced_custom_object(GROUP, VERSION, target.namespace, SNAPSHOT_PLURAL, name,
                                                  _request_timeout=TIMEOUT)
    if wait is not None:
        wait_until(lambda: _get_snapshot(target, name) is None, wait,
                   f"AuroraSnapshot {name} to be deleted (its objects removed by the operator)")
