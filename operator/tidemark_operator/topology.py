"""A writer's Topology from an AuroraCluster's placement ConfigMap and its pods, with the
tokens its nodes want and the trust their certificates need: given (an instance's
mounted token files and CA file), else read from the cluster's node-auth and node-tls
Secrets when the caller may read them (the operator, tools, tests). Node hops on
Kubernetes are verify-ca (nodetls.py): pods are addressed by IP."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Any

from tidemark_compute.topology import Topology, client_tls_verify_ca
from tidemark_protocol.errors import UserError
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.node_auth import NodeCredentials

from . import nodekeys, nodetls
from . import placement as pl
from .model import (
    node_auth_secret_name,
    node_tls_secret_name,
    placement_name,
    selector_labels,
    service_name,
)


class KeySource(Enum):
    """Where cluster_topology takes the node tokens (or the CA) from, when not given."""

    SECRET = "secret"


READ_KEY = KeySource.SECRET  # cluster_topology's credentials: derive them from the node-auth Secret
READ_CA = KeySource.SECRET  # cluster_topology's tls: the node-tls Secret's ca.crt
Credentials = NodeCredentials | KeySource | None
Trust = ssl.SSLContext | KeySource | None


def topology_from_objects(doc: dict[str, Any], pod_ips: dict[str, str | None], namespace: str,
                          cluster: str, credentials: NodeCredentials | None = None,
                          tls: ssl.SSLContext | None = None, plain: frozenset[str] = frozenset()) -> Topology:
    """Pods with an IP are addressed by it; others by their headless-Service DNS name.
    https, but for the PLAIN pods (made before node TLS, serving http until they roll)."""
    nodes = {}
    for pod in sorted(pl.pods_of(doc)):
        ip = pod_ips.get(pod)
        host = ip or f"{pod}.{service_name(cluster)}.{namespace}.svc"
        nodes[pod] = nodetls.node_url(host, tls=pod not in plain)
    return Topology(VolumeLayout.from_json(doc["layout"]), nodes, pl.memberships(doc),
                    int(doc.get("volume_epoch", 0)), credentials=credentials, tls=tls)


def trust_from_file(ca_file: str) -> ssl.SSLContext:
    """A pod's mounted ca.crt (nodetls.ca_path()) as the trust for the nodes (verify-ca)."""
    try:
        return client_tls_verify_ca(ca_file=ca_file)
    except ssl.SSLError as exc:
        raise UserError(f"{ca_file}: not a CA certificate ({exc.reason or exc})") from None


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


def cluster_trust(core: Any, namespace: str, cluster: str) -> ssl.SSLContext | None:
    """Trust for the cluster's nodes (verify-ca against its own CA) from its node-tls
    Secret; None when there is none or the caller may not read it (then nothing trusts
    the nodes' certificates: every https call fails verification, never goes in clear)."""
    from kubernetes.client.exceptions import ApiException

    try:
        secret = core.read_namespaced_secret(node_tls_secret_name(cluster), namespace, _request_timeout=10)
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    return client_tls_verify_ca(ca_pem=nodetls.ca_pem(secret.data))


def pod_serves_tls(pod: Any) -> bool:
    """Whether a storage pod (a kubernetes client V1Pod) serves https: its own command
    says so (a pod made before node TLS serves http until it rolls)."""
    container = pod.spec.containers[0] if pod.spec and pod.spec.containers else None
    return nodetls.serves_tls([*(container.command or []), *(container.args or [])] if container else [])


def cluster_topology(core: Any, namespace: str, cluster: str,
                     credentials: Credentials = READ_KEY, tls: Trust = READ_CA) -> Topology:
    """core: a kubernetes CoreV1Api. CREDENTIALS: the tokens to present; READ_KEY: the
    node-auth Secret's, when the caller may read it; None: none. TLS: the trust for the
    nodes' certificates; READ_CA: the node-tls Secret's CA, when it may be read."""
    if credentials is READ_KEY:
        credentials = cluster_credentials(core, namespace, cluster)
    if tls is READ_CA:
        tls = cluster_trust(core, namespace, cluster)
    assert not isinstance(tls, KeySource)
    cm = core.api_client.sanitize_for_serialization(
        core.read_namespaced_config_map(placement_name(cluster), namespace, _request_timeout=10))
    doc, _rv = pl.parse_configmap(cm)
    sel = ",".join(f"{k}={v}" for k, v in selector_labels(cluster).items())
    pods = core.list_namespaced_pod(namespace, label_selector=sel, _request_timeout=10).items
    live = [p for p in pods if p.status.phase == "Running" and p.metadata.deletion_timestamp is None]
    ips = {p.metadata.name: p.status.pod_ip for p in live}
    plain = frozenset(p.metadata.name for p in live if not pod_serves_tls(p))
    return topology_from_objects(doc, ips, namespace, cluster, credentials, tls, plain)


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
                          credentials: Credentials = READ_KEY, tls: Trust = READ_CA) -> Topology:
    from kubernetes import client

    ns = kube_namespace(namespace, kubeconfig)  # loads the config: before the API client is made
    return cluster_topology(client.CoreV1Api(), ns, cluster, credentials, tls)


def cluster_membership_source(cluster: str, namespace: str | None = None, kubeconfig: str | None = None,
                              credentials: Credentials = READ_KEY, tls: Trust = READ_CA,
                              ) -> Callable[[], Awaitable[Topology]]:
    """An async callable returning the cluster's current Topology (a Writer's
    membership_source: re-read when a PG's membership changes). CREDENTIALS and TLS as in
    cluster_topology (a pod passes its mounted tokens and CA: it may not read Secrets)."""

    async def load() -> Topology:
        return await asyncio.to_thread(load_cluster_topology, cluster, namespace, kubeconfig, credentials, tls)

    return load
