"""`kubectl tidemark restore SOURCE NEW`: a new AuroraCluster holding SOURCE's database as
of a point in time, the way examples/restore-cluster.yaml does it by hand: SOURCE's shape
(volume, nodes, storage, instances, image, resources), `spec.restore.source.cluster` and
`pointInTime`, and backups of its own next to SOURCE's (same bucket, endpoint,
credentials and encryption; prefix NEW). The operator does the restore; this waits for
`status.restore` to say Done or Failed."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from tidemark_operator.model import GROUP, KIND, PLURAL, VERSION
from tidemark_protocol.errors import UserError

from .cluster_backup import wait_until
from .kube_target import TIMEOUT, Target

# What the new cluster takes over from its source (everything else is its own or defaulted).
SHAPE = ("nodesPerZone", "volume", "storage", "resources", "instances", "image", "imagePullPolicy", "instance",
         "repair", "deletionPolicy")


class RestoreError(UserError):
    """A restore that cannot start or that failed (one line for the user)."""


def sibling_prefix(target: str, name: str) -> str:
    """s3://bucket/a/src -> s3://bucket/a/NAME: the new cluster's own backup prefix."""
    head, sep, _last = target.rstrip("/").rpartition("/")
    if not sep or head.endswith(":/"):  # s3://bucket: no prefix to replace
        return f"{target.rstrip('/')}/{name}"
    return f"{head}/{name}"


def restore_body(source: Mapping[str, Any], name: str, at: str | None, backup: bool = True) -> dict[str, Any]:
    """The AuroraCluster a user would apply by hand to restore SOURCE into NAME."""
    src_name = source["metadata"]["name"]
    spec_src = source.get("spec") or {}
    src_backup = spec_src.get("backup") or {}
    if not src_backup.get("enabled"):
        raise RestoreError(f"AuroraCluster {src_name} has no spec.backup enabled: there is nothing to restore from")
    if name == src_name:
        raise RestoreError("restore makes a NEW cluster: give it another name than its source")
    spec: dict[str, Any] = {k: copy.deepcopy(spec_src[k]) for k in SHAPE if k in spec_src}
    spec["restore"] = {"source": {"cluster": src_name}, **({"pointInTime": at} if at else {})}
    if backup:
        own = copy.deepcopy(src_backup)
        own["target"] = sibling_prefix(str(src_backup["target"]), name)
        spec["backup"] = own
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": name}, "spec": spec}


def restore_row(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The restored cluster as the command prints it (snake_case)."""
    rs = (obj.get("status") or {}).get("restore") or {}
    spec = obj.get("spec") or {}
    return {"name": obj["metadata"]["name"], "source": ((spec.get("restore") or {}).get("source") or {}).get("cluster"),
            "phase": rs.get("phase", "Pending"), "point_in_time": rs.get("pointInTime"), "lsn": rs.get("lsn"),
            "pages": rs.get("pages"), "seconds": rs.get("seconds"), "message": rs.get("message"),
            "backup_target": (spec.get("backup") or {}).get("target")}


def create_restore(target: Target, source: str, name: str, at: str | None, backup: bool,
                   wait: float | None) -> dict[str, Any]:
    body = restore_body(target.cluster(source), name, at, backup)
    try:
        target.custom.create_namespaced_custom_object(GROUP, VERSION, target.namespace, PLURAL, body,
                                                      _request_timeout=TIMEOUT)
    except ApiException as exc:
        if exc.status == 409:
            raise RestoreError(f"AuroraCluster {name} exists already: restore needs a new name") from exc
        raise
    if wait is None:
        return restore_row(body)

    def settled() -> dict[str, Any] | None:
        obj = target.cluster(name)
        phase = ((obj.get("status") or {}).get("restore") or {}).get("phase")
        return obj if phase in ("Done", "Failed") else None

    row = restore_row(wait_until(settled, wait, f"the restore of {source} into {name}", interval=2.0))
    if row["phase"] == "Failed":
        raise RestoreError(f"restore of {source} into {name} failed: {row['message']} "
                           f"(`kubectl describe ac {name}`; delete it to give up)")
    return row
