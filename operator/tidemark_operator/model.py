"""Resource names, labels and the zones of an AuroraCluster (pure)."""

from __future__ import annotations

import re
from collections.abc import Mapping

from .spec import ClusterSpec

GROUP = "tidemark.dev"
VERSION = "v1alpha1"
PLURAL = "auroraclusters"
KIND = "AuroraCluster"
ZONE_LABEL = "topology.kubernetes.io/zone"
RUN_LOCAL_LABEL = "tidemark.dev/run-local"
CLUSTER_LABEL = "tidemark.dev/cluster"
ZONE_POD_LABEL = "tidemark.dev/zone"
COMPONENT_LABEL = "app.kubernetes.io/component"
STORAGE_COMPONENT = "storage"
SPEC_HASH = "tidemark.dev/spec-hash"
TEMPLATE_HASH = "tidemark.dev/template-hash"
NODE_PORT = 7000


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
    return {CLUSTER_LABEL: cluster, COMPONENT_LABEL: STORAGE_COMPONENT}


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
