"""A writer's Topology from an AuroraCluster's placement ConfigMap and its pods."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from tidemark_compute.topology import Topology
from tidemark_protocol.layout import VolumeLayout

from . import placement as pl
from .model import NODE_PORT, placement_name, selector_labels, service_name


def topology_from_objects(doc: dict[str, Any], pod_ips: dict[str, str | None], namespace: str,
                          cluster: str) -> Topology:
    """Pods with an IP are addressed by it; others by their headless-Service DNS name."""
    nodes = {}
    for pod in sorted(pl.pods_of(doc)):
        ip = pod_ips.get(pod)
        host = ip or f"{pod}.{service_name(cluster)}.{namespace}.svc"
        nodes[pod] = f"http://{host}:{NODE_PORT}"
    return Topology(VolumeLayout.from_json(doc["layout"]), nodes, pl.memberships(doc),
                    int(doc.get("volume_epoch", 0)))


def cluster_topology(core: Any, namespace: str, cluster: str) -> Topology:
    """core: a kubernetes CoreV1Api."""
    cm = core.api_client.sanitize_for_serialization(
        core.read_namespaced_config_map(placement_name(cluster), namespace, _request_timeout=10))
    doc, _rv = pl.parse_configmap(cm)
    sel = ",".join(f"{k}={v}" for k, v in selector_labels(cluster).items())
    pods = core.list_namespaced_pod(namespace, label_selector=sel, _request_timeout=10).items
    ips = {p.metadata.name: p.status.pod_ip for p in pods
           if p.status.phase == "Running" and p.metadata.deletion_timestamp is None}
    return topology_from_objects(doc, ips, namespace, cluster)


def kube_namespace(namespace: str | None = None, kubeconfig: str | None = None) -> str:
    """Configure the kubernetes client (in-cluster credentials, else the kubeconfig) and
    return NAMESPACE or the default one (the pod's, else the kubeconfig context's).
    (The kubernetes client is imported here, not with the module: `tidemark sql serve`
    imports this module and a playground instance must not pay ~0.5 s for it.)"""
    from kubernetes import config

    try:
        config.load_incluster_config()
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return namespace or fh.read().strip()
    except config.ConfigException:
        config.load_kube_config(config_file=kubeconfig)
        return namespace or (config.list_kube_config_contexts(config_file=kubeconfig)[1]
                             .get("context", {}).get("namespace") or "default")


def load_cluster_topology(cluster: str, namespace: str | None = None,
                          kubeconfig: str | None = None) -> Topology:
    from kubernetes import client

    ns = kube_namespace(namespace, kubeconfig)  # loads the config: before the API client is made
    return cluster_topology(client.CoreV1Api(), ns, cluster)


def cluster_membership_source(cluster: str, namespace: str | None = None,
                              kubeconfig: str | None = None) -> Callable[[], Awaitable[Topology]]:
    """An async callable returning the cluster's current Topology (a Writer's
    membership_source: re-read when a PG's membership changes)."""

    async def load() -> Topology:
        return await asyncio.to_thread(load_cluster_topology, cluster, namespace, kubeconfig)

    return load
