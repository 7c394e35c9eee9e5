"""`kubectl tidemark maintenance on|off`: set or clear the annotation the operator reads
to pause new segment rebuilds (tidemark_operator.maintenance), and wait until its status
shows it: from then on no pass starts a rebuild."""

from __future__ import annotations

from typing import Any

from tidemark_operator.maintenance import CONDITION
from tidemark_operator.model import MAINTENANCE_ANNOTATION

from .cluster_backup import wait_until
from .cluster_view import condition_of
from .kube_target import Target


def set_maintenance(target: Target, name: str, on: bool, wait: float | None) -> dict[str, Any]:
    """Patch the annotation (merge patch; None removes it); with WAIT seconds, until the
    operator's Maintenance condition agrees."""
    target.patch_cluster(name, {"metadata": {"annotations": {MAINTENANCE_ANNOTATION: "true" if on else None}}})
    acknowledged = None
    if wait is not None:
        def agrees() -> bool:
            c = condition_of(target.cluster(name).get("status") or {}, CONDITION)
            return (c.get("status") == "True") == on and (on or bool(c))

        acknowledged = wait_until(agrees, wait, f"the operator to show {CONDITION}={on} on {name}", 0.5)
    return {"cluster": name, "namespace": target.namespace, "maintenance": on,
            "acknowledged": acknowledged}
