"""`kubectl tidemark switchover NAME` (alias `promote`): ask the operator for a planned
writer switchover (tidemark_operator.switchover) and, with a wait, follow it until a new
writer serves."""

from __future__ import annotations

import datetime as dt
from typing import Any

from tidemark_operator.model import SWITCHOVER_ANNOTATION
from tidemark_protocol.errors import UserError

from .cluster_backup import wait_until
from .kube_target import Target


def request_switchover(target: Target, name: str, wait: float | None) -> dict[str, Any]:
    """Annotate NAME with a new request id; with WAIT seconds, until status.switchover of
    that request ends (Done; Refused or TimedOut are errors with the operator's words)."""
    status = target.cluster(name).get("status") or {}
    if not status.get("currentPrimary"):
        raise UserError(f"AuroraCluster {name} has no writer instance to switch over (spec.instances 0?)")
    request = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    target.patch_cluster(name, {"metadata": {"annotations": {SWITCHOVER_ANNOTATION: request}}})
    doc: dict[str, Any] = {"cluster": name, "namespace": target.namespace, "request": request,
                           "from": status["currentPrimary"]}
    if wait is None:
        return doc

    def ended() -> dict[str, Any] | None:
        last = (target.cluster(name).get("status") or {}).get("switchover") or {}
        return last if last.get("request") == request and last.get("phase") != "Switching" else None

    last = wait_until(ended, wait, f"switchover {request} of {name} to finish", 1.0)
    if last.get("phase") != "Done":
        raise UserError(f"switchover of {name} {last.get('phase', '').lower()}: "
                        f"{last.get('message') or 'see kubectl tidemark status ' + name}")
    return {**doc, "to": last.get("to"), "durationSeconds": last.get("durationSeconds")}
