"""The NetworkPolicies of an AuroraCluster (pure): who may open a connection to its pods.
Ingress only: egress (to the backup store, the apiserver, DNS) is left to the user's own
policies, and a connection once open may answer.

- `NAME-nodes`, on the storage pods' port: the cluster's own pods (peers for gossip,
  hydration and repair; its instances), the operator's pods, pods labelled
  `tidemark.dev/node-client=NAME` (a verifying workload, `tidemark chaos`) and
  `spec.network.allowFrom` (say, a Prometheus).
- `NAME-instances`, on the instances' pods: the admin port (status, probes' twin, the
  replica feed) from the same peers; the PostgreSQL port from `spec.network.sqlFrom`
  (omitted: anywhere, as a database's clients are).

Kubelet probes come from the node itself, which NetworkPolicy implementations admit
(kube-network-policies: any packet of a root process of the node). The node tokens and
TLS stay the guard on every hop; these policies keep everyone else from even reaching it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .model import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    NODE_CLIENT_LABEL,
    NODE_PORT,
    SQL_ADMIN_PORT,
    SQL_PORT,
    instance_selector,
    instances_policy_name,
    nodes_policy_name,
    selector_labels,
)
from .resources import _meta, _stamp
from .spec import ClusterSpec

# The chart's operator pods (templates/deployment.yaml).
OPERATOR_POD_LABELS = {"app.kubernetes.io/name": "tidemark", COMPONENT_LABEL: "operator"}


def operator_peer(operator_namespace: str | None) -> dict[str, Any]:
    """The operator's pods: in its own namespace when it knows it (it runs in a pod),
    else in any namespace (an operator run outside the cluster reaches no pod IP anyway)."""
    namespaces = {"matchLabels": {"kubernetes.io/metadata.name": operator_namespace}} if operator_namespace else {}
    return {"namespaceSelector": namespaces, "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)}}


def cluster_peers(cluster: str, spec: ClusterSpec, operator_namespace: str | None) -> list[dict[str, Any]]:
    """Who may reach the storage port and the instances' admin port."""
    return [{"podSelector": {"matchLabels": {CLUSTER_LABEL: cluster}}},
            {"podSelector": {"matchLabels": {NODE_CLIENT_LABEL: cluster}}},
            operator_peer(operator_namespace),
            *(dict(p) for p in spec.network.allow_from)]


def _policy(name: str, cluster: str, namespace: str, pods: Mapping[str, str], ingress: list[dict[str, Any]],
            owner: Mapping[str, Any] | None) -> dict[str, Any]:
    return _stamp({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(name, namespace, cluster),
        "spec": {"podSelector": {"matchLabels": dict(pods)}, "policyTypes": ["Ingress"], "ingress": ingress},
    }, owner)


def _tcp(port: int) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}]


def nodes_policy(cluster: str, namespace: str, spec: ClusterSpec, operator_namespace: str | None,
                 owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    ingress = [{"ports": _tcp(NODE_PORT), "from": cluster_peers(cluster, spec, operator_namespace)}]
    return _policy(nodes_policy_name(cluster), cluster, namespace, selector_labels(cluster), ingress, owner)


def instances_policy(cluster: str, namespace: str, spec: ClusterSpec, operator_namespace: str | None,
                     owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    sql: dict[str, Any] = {"ports": _tcp(SQL_PORT)}
    if spec.network.sql_from is not None:
        sql["from"] = [dict(p) for p in spec.network.sql_from]
    admin = {"ports": _tcp(SQL_ADMIN_PORT), "from": cluster_peers(cluster, spec, operator_namespace)}
    return _policy(instances_policy_name(cluster), cluster, namespace, instance_selector(cluster), [sql, admin],
                   owner)


def wanted(cluster: str, namespace: str, spec: ClusterSpec, operator_namespace: str | None,
           owner: Mapping[str, Any] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """(the policies to converge, the names of ours to delete): none with
    `spec.network.policies` false; the instances' one only while there are instances."""
    want: list[dict[str, Any]] = []
    if spec.network.policies:
        want.append(nodes_policy(cluster, namespace, spec, operator_namespace, owner))
        if spec.instances > 0:
            want.append(instances_policy(cluster, namespace, spec, operator_namespace, owner))
    names = {o["metadata"]["name"] for o in want}
    return want, [n for n in (nodes_policy_name(cluster), instances_policy_name(cluster)) if n not in names]
