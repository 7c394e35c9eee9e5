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
INSTANCE_COMPONENT = "instance"
ROLE_LABEL = "tidemark.dev/role"  # writer | replica (instance pods)
# on a pod that may open connections to cluster NAME's storage nodes (its value: NAME), as
# a verifying workload or `tidemark chaos` does (netpolicy.py)
NODE_CLIENT_LABEL = "tidemark.dev/node-client"
SPEC_HASH = "tidemark.dev/spec-hash"
TEMPLATE_HASH = "tidemark.dev/template-hash"
# "true": no new segment rebuilds start (maintenance.py; `kubectl tidemark maintenance on`)
MAINTENANCE_ANNOTATION = "tidemark.dev/maintenance"
SWITCHOVER_ANNOTATION = "tidemark.dev/switchover"  # its value names one request
NODE_PORT = 7000
SQL_PORT = 5432
SQL_ADMIN_PORT = 5433
ROLES = ("writer", "replica")


def dns_label(s: str) -> str:
    out = re.sub(r"[^a-z0-9-]+", "-", s.lower()).strip("-")
    return out or "x"


def statefulset_name(cluster: str, zone: str) -> str:
    return f"{cluster}-{dns_label(zone)}"


def pod_name(cluster: str, zone: str, index: int) -> str:
    return f"{statefulset_name(cluster, zone)}-{index}"


def service_name(cluster: str) -> str:
    return f"{cluster}-nodes"


def nodes_policy_name(cluster: str) -> str:
    """NetworkPolicy of the storage pods (netpolicy.py)."""
    return f"{cluster}-nodes"


def instances_policy_name(cluster: str) -> str:
    """NetworkPolicy of the instance pods (netpolicy.py)."""
    return f"{cluster}-instances"


def pdb_name(cluster: str) -> str:
    return f"{cluster}-storage"


def placement_name(cluster: str) -> str:
    return f"{cluster}-placement"


def instance_deployment_name(cluster: str, role: str) -> str:
    return f"{cluster}-{role}"


def endpoint_service_name(cluster: str, kind: str) -> str:
    """kind: rw (the writer), ro (ready replicas), r (any instance), as CloudNativePG's."""
    return f"{cluster}-{kind}"


def app_secret_name(cluster: str) -> str:
    return f"{cluster}-app"


def node_auth_secret_name(cluster: str) -> str:
    """The storage nodes' key and the role tokens derived from it (nodekeys.py)."""
    return f"{cluster}-node-auth"


def node_tls_secret_name(cluster: str) -> str:
    """The cluster's CA and the storage nodes' serving certificate (nodetls.py)."""
    return f"{cluster}-node-tls"


def instance_tls_secret_name(cluster: str) -> str:
    """The instances' serving certificate, signed by the cluster's CA (instancetls.py)."""
    return f"{cluster}-instance-tls"


def ca_configmap_name(cluster: str) -> str:
    """The cluster's CA certificate alone, for database clients (instancetls.py)."""
    return f"{cluster}-ca"


def writer_lease_name(cluster: str) -> str:
    """The coordination.k8s.io Lease the writer instance holds."""
    return f"{cluster}-writer"


def instance_account_name(cluster: str) -> str:
    """ServiceAccount (and Role, RoleBinding) of the instance pods."""
    return f"{cluster}-instance"


MANAGED_BY_LABEL, MANAGED_BY = "app.kubernetes.io/managed-by", "tidemark-operator"


def cluster_labels(cluster: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "tidemark",
        "app.kubernetes.io/instance": cluster,
        MANAGED_BY_LABEL: MANAGED_BY,
        CLUSTER_LABEL: cluster,
    }


def selector_labels(cluster: str) -> dict[str, str]:
    return {CLUSTER_LABEL: cluster, COMPONENT_LABEL: STORAGE_COMPONENT}


def instance_selector(cluster: str, role: str | None = None) -> dict[str, str]:
    sel = {CLUSTER_LABEL: cluster, COMPONENT_LABEL: INSTANCE_COMPONENT}
    return {**sel, ROLE_LABEL: role} if role else sel


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
