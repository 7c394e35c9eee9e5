"""`tidemark sql`: the SQL tier's commands (tidemark_sql.cli) with `serve --from-cluster`
bound to the operator's knowledge of an AuroraCluster (its topology from the placement
ConfigMap and pods, the writer Lease's name). Wired here, on top, because the SQL tier
sits below the operator and must not import it."""

from __future__ import annotations

from pathlib import Path

from tidemark_operator.model import writer_lease_name
from tidemark_operator.topology import (
    READ_CA,
    READ_KEY,
    cluster_membership_source,
    kube_namespace,
    trust_from_file,
)
from tidemark_protocol.node_auth import NodeCredentials
from tidemark_sql.cli import ClusterAccess, make_group


def bind_cluster(cluster: str, namespace: str | None, tokens: NodeCredentials | None,
                 ca_file: Path | None = None) -> ClusterAccess:
    """In-cluster credentials in a pod, else the kubeconfig ($KUBECONFIG). The kubernetes
    client is imported only here: a playground instance never pays for it. TOKENS: the
    pod's mounted node tokens (None: from the node-auth Secret, if it may be read);
    CA_FILE: the pod's mounted node CA (None: from the node-tls Secret, likewise)."""
    from kubernetes import client

    ns = kube_namespace(namespace)
    tls = trust_from_file(str(ca_file)) if ca_file is not None else READ_CA
    source = cluster_membership_source(cluster, ns, credentials=tokens if tokens is not None else READ_KEY, tls=tls)
    return ClusterAccess(namespace=ns, topology_source=source,
                         coordination=client.CoordinationV1Api(), lease_name=writer_lease_name(cluster))


sql = make_group(bind_cluster)
