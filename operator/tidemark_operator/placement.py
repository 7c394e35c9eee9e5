"""The placement map (PG -> segment members with membership epochs) and its storage in a
ConfigMap updated only by compare-and-swap on resourceVersion.

Document (ConfigMap data key ``placement.json``)::

    {"layout": {pg_count, pages_per_pg, page_size}, "volume_epoch": 0,
     "zones": {zone: [pod, ...]},
     "pgs": {"0": {"epoch": 1, "members": [...6 pods...], "next_members": null}, ...}}
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.placement import NodeInfo, place
from tidemark_protocol.quorum import Membership

from .model import cluster_labels, placement_name, pod_name
from .spec import ClusterSpec

DATA_KEY = "placement.json"


class Conflict(Exception):
    """An object changed under us (409: it exists already, or its resourceVersion is not
    the one that was read)."""


def planned_pods(cluster: str, zones: Sequence[str], nodes_per_zone: int) -> dict[str, list[str]]:
    return {z: [pod_name(cluster, z, i) for i in range(nodes_per_zone)] for z in zones}


def desired_placement(cluster: str, zones: Sequence[str], spec: ClusterSpec,
                      current: Mapping[str, Any] | None) -> dict[str, Any]:
    """The placement document for SPEC, keeping everything CURRENT already decided.

    Existing PGs keep their members and epochs; new PGs (pgCount grew) go to the
    least-loaded pods, which includes pods added by scaling nodesPerZone up."""
    pods = planned_pods(cluster, zones, spec.nodes_per_zone)
    vol = spec.volume
    nodes = [NodeInfo(p, z) for z, ps in pods.items() for p in ps]
    if current:
        layout = dict(current["layout"])
        layout["pg_count"] = max(int(layout["pg_count"]), vol.pg_count)
        pgs = {str(k): dict(v) for k, v in current["pgs"].items()}
        epoch = int(current.get("volume_epoch", 0))
        zones_doc = {z: sorted(set(current.get("zones", {}).get(z, [])) | set(ps))
                     for z, ps in pods.items()}
    else:
        layout = VolumeLayout(vol.pg_count, vol.pages_per_pg, vol.page_size).to_json()
        pgs, epoch, zones_doc = {}, 0, {z: list(ps) for z, ps in pods.items()}
    existing = {int(k): v["members"] for k, v in pgs.items()}
    placed = place(list(range(layout["pg_count"])), nodes, existing)
    for pg, members in placed.items():
        if str(pg) not in pgs:
            pgs[str(pg)] = Membership(1, tuple(members)).to_json()
    return {"layout": layout, "volume_epoch": epoch, "zones": zones_doc,
            "pgs": {k: pgs[k] for k in sorted(pgs, key=int)}}


def memberships(doc: Mapping[str, Any]) -> dict[int, Membership]:
    return {int(pg): Membership.from_json(m) for pg, m in doc["pgs"].items()}


def pods_of(doc: Mapping[str, Any]) -> set[str]:
    out: set[str] = set()
    for m in memberships(doc).values():
        out.update(m.all_members)
    return out


def configmap(cluster: str, namespace: str, doc: Mapping[str, Any],
              resource_version: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": placement_name(cluster), "namespace": namespace,
                            "labels": cluster_labels(cluster)}
    if resource_version is not None:
        meta["resourceVersion"] = resource_version
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
            "data": {DATA_KEY: json.dumps(doc, indent=1, sort_keys=True)}}


def parse_configmap(cm: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    return json.loads(cm["data"][DATA_KEY]), str(cm["metadata"]["resourceVersion"])


def compare_and_swap(
    read: Callable[[], Mapping[str, Any] | None],
    create: Callable[[dict[str, Any]], Any],
    replace: Callable[[dict[str, Any]], Any],
    update: Callable[[dict[str, Any] | None], dict[str, Any] | None],
    build: Callable[[dict[str, Any], str | None], dict[str, Any]],
) -> tuple[dict[str, Any] | None, bool]:
    """One CAS round: read the object, let UPDATE compute the new document (None = keep),
    write it with the resourceVersion that was read. Returns (document, changed).

    `create`/`replace` must raise Conflict when the apiserver answers 409 (exists /
    resourceVersion mismatch); the caller retries later with a fresh read."""
    cm = read()
    current, rv = (parse_configmap(cm) if cm else (None, None))
    new = update(current)
    if new is None or new == current:
        return current, False
    if rv is None:
        create(build(new, None))
    else:
        replace(build(new, rv))
    return new, True
