"""`tidemark sql`: the SQL tier's commands (tidemark_sql.cli) with `serve --from-cluster`
bound to the operator's knowledge of an AuroraCluster (its topology from the placement
ConfigMap and pods, the writer Lease's name). Wired here, on top, because the SQL tier
sits below the operator and must not import it."""

from __future__ import annotations

from tidemark_operator.model import writer_lease_name
from tidemark_operator.topology import cluster_membership_source, kube_namespace
from tidemark_sql.cli import ClusterAccess, make_group


def bind_cluster(cluster: str, namespace: str | None) -> ClusterAccess:
    """In-cluster credentials in a pod, else the kubeconfig ($KUBECONFIG). The kubernetes
    client is imported only here: a playground instance never pays for it."""
    from kubernetes import client

    ns = kube_namespace(namespace)
    return ClusterAccess(namespace=ns, topology_source=cluster_membership_source(cluster, ns),
                         coordination=client.CoordinationV1Api(), lease_name=writer_lease_name(cluster))


sql = make_group(bind_cluster)
