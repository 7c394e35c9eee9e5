"""The AuroraCluster spec as a typed value, resource names and labels (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GROUP = "tidemark.dev"
VERSION = "v1alpha1"
PLURAL = "auroraclusters"
KIND = "AuroraCluster"
ZONE_LABEL = "topology.kubernetes.io/zone"
RUN_LOCAL_LABEL = "tidemark.dev/run-local"
CLUSTER_LABEL = "tidemark.dev/cluster"
ZONE_POD_LABEL = "tidemark.dev/zone"
SPEC_HASH = "tidemark.dev/spec-hash"
TEMPLATE_HASH = "tidemark.dev/template-hash"
NODE_PORT = 7000
DEFAULT_IMAGE = "ghcr.io/tidemark/tidemark:0.1.0"


@dataclass(frozen=True)
class ClusterSpec:
    zones: tuple[str, ...] | None = None
    nodes_per_zone: int = 2
    pg_count: int = 4
    pages_per_pg: int = 64
    page_size: int = 4096
    storage_class: str | None = None
    storage_size: str = "10Gi"
    ephemeral_storage: bool = False
    image: str = DEFAULT_IMAGE
    image_pull_policy: str = "IfNotPresent"
    resources: Mapping[str, Any] = field(default_factory=dict)
    deletion_policy: str = "Retain"
    node_loss_timeout: str = "5m"
    max_concurrent_rebuilds: int = 2
    rebuild_bandwidth: str = "50Mi"

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> ClusterSpec:
        volume = spec.get("volume") or {}
        storage = spec.get("storage") or {}
        repair = spec.get("repair") or {}
        zones = spec.get("zones")
        return cls(
            zones=tuple(zones) if zones else None,
            nodes_per_zone=int(spec.get("nodesPerZone", 2)),
            pg_count=int(volume.get("pgCount", 4)),
            pages_per_pg=int(volume.get("pagesPerPg", 64)),
            page_size=int(volume.get("pageSize", 4096)),
            storage_class=storage.get("className") or None,
            storage_size=str(storage.get("size", "10Gi")),
            ephemeral_storage=bool(storage.get("ephemeral", False)),
            image=str(spec.get("image") or DEFAULT_IMAGE),
            image_pull_policy=str(spec.get("imagePullPolicy") or "IfNotPresent"),
            resources=dict(spec.get("resources") or {}),
            deletion_policy=str(spec.get("deletionPolicy") or "Retain"),
            node_loss_timeout=str(repair.get("nodeLossTimeout", "5m")),
            max_concurrent_rebuilds=int(repair.get("maxConcurrentRebuilds", 2)),
            rebuild_bandwidth=str(repair.get("rebuildBandwidth", "50Mi")),
        )


def dns_label(s: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-")
    return out or "x"


def statefulset_name(cluster: str, zone: str) -> str:
    return f"{cluster}-{dns_label(zone)}"


def pod_name(cluster: str, zone: str, index: int) -> str:
    return f"{statefulset_name(cluster, zone)}-{index}"


def service_name(cluster: str) -> str:
    return f"{cluster}-nodes"


def pdb_name(cluster: str) -> str:
    return f"{cluster}-storage"


def placement_name(cluster: str) -> str:
    return f"{cluster}-placement"


def cluster_labels(cluster: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tidemark",
        "app.kubernetes.io/instance": cluster,
        "app.kubernetes.io/managed-by": "tidemark-operator",
        CLUSTER_LABEL: cluster,
    }


def selector_labels(cluster: str) -> dict[str, str]:
    return {CLUSTER_LABEL: cluster, "app.kubernetes.io/component": "storage"}


def resolve_zones(spec: ClusterSpec, node_zones: Mapping[str, int]) -> tuple[list[str] | None, str, str]:
    """The cluster's zones and, if they cannot be used, (None, reason, message).

    node_zones: zone -> number of Ready nodes carrying that zone label."""
    if spec.zones:
        zones = list(spec.zones)
    else:
        zones = sorted(z for z, n in node_zones.items() if n > 0)
        if len(zones) != 3:
            return None, "ZoneDiscoveryFailed", (
                f"spec.zones is not set and the nodes' {ZONE_LABEL} labels name {len(zones)} "
                f"zone(s) {zones}; exactly 3 are needed")
    empty = [z for z in zones if node_zones.get(z, 0) == 0]
    if empty:
        return None, "ZoneUnavailable", (
            f"no Ready node carries {ZONE_LABEL} in {empty}; the cluster needs nodes in all of {zones}")
    return zones, "", ""
