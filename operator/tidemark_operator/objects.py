"""Converge the objects an AuroraCluster owns (Service, StatefulSets, PDB): create what
is missing, patch what drifted from the desired object's hash, and let a StatefulSet's new
pod template wait until it is that zone's turn (one zone at a time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .kube import Kube
from .model import (
    CLUSTER_LABEL,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    SPEC_HASH,
    TEMPLATE_HASH,
    ZONE_POD_LABEL,
)
from .placement import Conflict
from .resources import template_rollout_allowed

Event = Callable[[str, str, str], None]  # (type, reason, message)


def ensure(kube: Kube, obj: dict[str, Any], event: Event, cur: Any = ...,
           template_change_allowed: bool = True) -> str | None:
    """Create OBJ if missing, patch it if our hash differs. Returns what was done
    ("created", "updated", "deferred": a StatefulSet template change waits its turn)."""
    kind, name, ns = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
    if cur is ...:
        cur = kube.read(kind, name, ns)
    if cur is None:
        try:
            kube.create(obj)
        except Conflict:
            return None
        event("Normal", "Created", f"created {kind} {name}")
        return "created"
    if (cur["metadata"].get("annotations") or {}).get(SPEC_HASH) == obj["metadata"]["annotations"][SPEC_HASH]:
        return None
    if kind == "StatefulSet":
        # selector and volumeClaimTemplates are immutable: patch what may change
        patch = {"metadata": {"annotations": obj["metadata"]["annotations"],
                              "labels": obj["metadata"]["labels"]},
                 "spec": {"replicas": obj["spec"]["replicas"],
                          "template": obj["spec"]["template"]}}
        cur_tpl = (cur["metadata"].get("annotations") or {}).get(TEMPLATE_HASH)
        if cur_tpl != obj["metadata"]["annotations"][TEMPLATE_HASH] and not template_change_allowed:
            if cur["spec"].get("replicas") == obj["spec"]["replicas"]:
                return "deferred"
            # scaling is safe now; the template (and our hashes) wait their turn
            kube.patch({"kind": kind, "metadata": {"name": name, "namespace": ns},
                        "spec": {"replicas": obj["spec"]["replicas"]}})
            event("Normal", "Scaled", f"scaled {kind} {name} to {obj['spec']['replicas']}")
            return "deferred"
        kube.patch({**patch, "kind": kind, "metadata": {**patch["metadata"], "name": name, "namespace": ns}})
    else:
        kube.patch(obj)
    event("Normal", "Updated", f"updated {kind} {name}")
    return "updated"


def remove_ours(kube: Kube, kind: str, name: str, ns: str, cluster: str, event: Event) -> bool:
    """Delete KIND NAME if it exists and is this cluster's, made by the operator (never an
    object of the same name somebody else made). Returns whether it deleted it."""
    cur = kube.read(kind, name, ns)
    labels = (cur or {}).get("metadata", {}).get("labels") or {}
    if cur is None or labels.get(CLUSTER_LABEL) != cluster or labels.get(MANAGED_BY_LABEL) != MANAGED_BY:
        return False
    kube.delete(kind, name, ns)
    event("Normal", "Deleted", f"deleted {kind} {name}")
    return True


def converge(kube: Kube, objs: Sequence[dict[str, Any]], all_segments_healthy: bool,
             event: Event) -> tuple[list[str], list[str]]:
    """Ensure every desired object; a pod template change goes to at most one zone per
    pass (template_rollout_allowed). Returns (what was done, StatefulSets deferred)."""
    ns = objs[0]["metadata"]["namespace"] if objs else ""
    current_sts = {o["metadata"]["labels"][ZONE_POD_LABEL]: kube.read("StatefulSet", o["metadata"]["name"], ns)
                   for o in objs if o["kind"] == "StatefulSet"}
    actions: list[str] = []
    deferred: list[str] = []
    rolled = False
    for obj in objs:
        if obj["kind"] == "StatefulSet":
            zone = obj["metadata"]["labels"][ZONE_POD_LABEL]
            allowed = not rolled and template_rollout_allowed(zone, current_sts, all_segments_healthy)
            done = ensure(kube, obj, event, current_sts[zone], allowed)
            rolled = rolled or (done == "updated")
        else:
            done = ensure(kube, obj, event)
        if done == "deferred":
            deferred.append(obj["metadata"]["name"])
        elif done:
            actions.append(f"{done} {obj['kind']} {obj['metadata']['name']}")
    return actions, deferred
