"""The placement ConfigMap on the apiserver: read it, and write it only by compare-and-swap
on its resourceVersion (placement.compare_and_swap); a 409 raises placement.Conflict and
the next pass re-reads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import kopf

from . import placement as pl
from .kube import Kube
from .model import placement_name
from .spec import ClusterSpec

Event = Callable[[str, str, str], None]


def owner_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The AuroraCluster as the owner of what it builds."""
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": body["metadata"]}


def retained(body: Mapping[str, Any]) -> bool:
    """deletionPolicy Retain (the default): the volume outlives the AuroraCluster."""
    return (body.get("spec") or {}).get("deletionPolicy", "Retain") != "Delete"


def read(kube: Kube, body: Mapping[str, Any]) -> dict[str, Any] | None:
    """The placement ConfigMap (None: not created yet)."""
    meta = body["metadata"]
    return kube.read("ConfigMap", placement_name(meta["name"]), meta["namespace"])


def read_doc(kube: Kube, body: Mapping[str, Any]) -> dict[str, Any] | None:
    cm = read(kube, body)
    return pl.parse_configmap(cm)[0] if cm else None


def swap(kube: Kube, body: Mapping[str, Any],
         update: Callable[[dict[str, Any] | None], dict[str, Any] | None],
         create: bool = True) -> tuple[dict[str, Any] | None, bool]:
    """One CAS round on the placement: UPDATE computes the new document from the current
    one (None = keep). Returns (document, changed). With create=False a missing
    placement is left missing."""
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]

    def do_create(obj: dict[str, Any]) -> None:
        if create:
            kube.create(obj)

    def build(doc: dict[str, Any], rv: str | None) -> dict[str, Any]:
        cm = pl.configmap(name, ns, doc, rv)
        if retained(body):
            # Kept with the PVCs when the cluster is deleted: the segments on them are
            # this placement's, so a cluster applied again under the name adopts both
            # (a fresh placement over old segments would mix two volumes).
            cm["metadata"]["ownerReferences"] = []
        else:
            kopf.adopt(cm, owner=owner_of(body))  # type: ignore[arg-type]  # a plain body dict
        return cm

    return pl.compare_and_swap(lambda: read(kube, body), do_create, kube.replace_config_map, update, build)


def ensure_placement(kube: Kube, body: Mapping[str, Any], zones: Sequence[str], spec: ClusterSpec,
                     event: Event) -> dict[str, Any]:
    """The placement for SPEC: created, or grown (new PGs, new pods) keeping every
    decision already made."""
    name = body["metadata"]["name"]
    doc, changed = swap(kube, body, lambda cur: pl.desired_placement(name, zones, spec, cur))
    assert doc is not None
    if changed:
        event("Normal", "PlacementUpdated",
              f"placement {placement_name(name)}: {len(doc['pgs'])} PGs on {len(pl.pods_of(doc))} pods")
    return doc

