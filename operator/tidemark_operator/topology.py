"""A writer's Topology from an AuroraCluster's placement ConfigMap and its pods, with the
tokens its nodes want: given (an instance's mounted token files), else derived from the
cluster's node-auth Secret when the caller may read it (the operator, tools, tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from tidemark_compute.topology import Topology
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.node_auth import NodeCredentials

from . import nodekeys
from . import placement as pl
from .model import NODE_PORT, node_auth_secret_name, placement_name, selector_labels, service_name


class KeySource(Enum):
    """Where cluster_topology takes the node tokens from, when not given."""

    SECRET = "secret"


READ_KEY = KeySource.SECRET  # cluster_topology's credentials: derive them from the node-auth Secret
Credentials = NodeCredentials | KeySource | None


def topology_from_objects(doc: dict[str, Any], pod_ips: dict[str, str | None], namespace: str,
                          cluster: str, credentials: NodeCredentials | None = None) -> Topology:
    """Pods with an IP are addressed by it; others by their headless-Service DNS name."""
    nodes = {}
    for pod in sorted(pl.pods_of(doc)):
        ip = pod_ips.get(pod)
        host = ip or f"{pod}.{service_name(cluster)}.{namespace}.svc"
        nodes[pod] = f"http://{host}:{NODE_PORT}"
    return Topology(VolumeLayout.from_json(doc["layout"]), nodes, pl.memberships(doc),
                    int(doc.get("volume_epoch", 0)), credentials=credentials)


def cluster_credentials(core: Any, namespace: str, cluster: str) -> NodeCredentials | None:
    """Every role's token from the cluster's node-auth Secret; None when there is none or
    the caller may not read it (its nodes then refuse its calls with 401)."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(node_auth_secret_name(cluster), namespace, _request_timeout=10)
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    return nodekeys.credentials_from_data(secret.data)


def cluster_topology(core: Any, namespace: str, cluster: str,
                     credentials: Credentials = READ_KEY) -> Topology:
    """core: a kubernetes CoreV1Api. CREDENTIALS: the tokens to present; READ_KEY: the
    node-auth Secret's, when the caller may read it; None: none."""
    if credentials is READ_KEY:
        credentials = cluster_credentials(core, namespace, cluster)
    cm = core.api_client.sanitize_for_serialization(
        core.read_namespaced_config_map(placement_name(cluster), namespace, _request_timeout=10))
    doc, _rv = pl.parse_configmap(cm)
    sel = ",".join(f"{k}={v}" for k, v in selector_labels(cluster).items())
    pods = core.list_namespaced_pod(namespace, label_selector=sel, _request_timeout=10).items
    ips = {p.metadata.name: p.status.pod_ip for p in pods
           if p.status.phase == "Running" and p.metadata.deletion_timestamp is None}
    return topology_from_objects(doc, ips, namespace, cluster, credentials)


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


def load_cluster_topology(cluster: str, namespace: str | None = None, kubeconfig: str | None = None,
                          credentials: Credentials = READ_KEY) -> Topology:
    from kubernetes import client

    ns = kube_namespace(namespace, kubeconfig)  # loads the config: before the API client is made
    return cluster_topology(client.CoreV1Api(), ns, cluster, credentials)


def cluster_membership_source(cluster: str, namespace: str | None = None, kubeconfig: str | None = None,
                              credentials: Credentials = READ_KEY,
                              ) -> Callable[[], Awaitable[Topology]]:
    """An async callable returning the cluster's current Topology (a Writer's
    membership_source: re-read when a PG's membership changes). CREDENTIALS as in
    cluster_topology (a pod passes its mounted tokens: it may not read Secrets)."""

    async def load() -> Topology:
        return await asyncio.to_thread(load_cluster_topology, cluster, namespace, kubeconfig, credentials)

    return load
