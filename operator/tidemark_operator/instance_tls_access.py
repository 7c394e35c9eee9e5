"""The operator's side of one AuroraCluster's instance TLS: the `<cluster>-instance-tls`
Secret (instancetls.py) issued from the cluster's CA (the `<cluster>-node-tls` Secret,
made earlier in the pass) when missing, re-issued with that CA before expiry, as the
storage nodes' certificate is (node_tls_access.reissue_if_due: one home for renewal).
The node-tls Secret is read only when the expiry kept in the memo is near or unknown
(an operator restart). No key material is logged or put in an event."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from . import instancetls, nodetls
from .kube import Kube
from .model import node_tls_secret_name
from .node_access import Event, secret_created_once
from .node_tls_access import reissue_if_due
from .state import ClusterState


def ensure(kube: Kube, state: ClusterState, cluster: str, ns: str, owner: Mapping[str, Any], event: Event,
           at: dt.datetime | None = None) -> str:
    """The cluster's CA certificate (PEM), the instances' Secret made or its certificate
    re-issued on the way when due. ValueError: no usable CA (the pass stops, as for the
    storage nodes: no new CA behind the pods' back)."""
    at = at or nodetls.now()
    if (state.cluster_ca_pem is not None and state.instance_tls_expiry is not None
            and state.instance_tls_expiry - at > nodetls.RENEW_BEFORE):
        return state.cluster_ca_pem
    ca_secret = kube.read("Secret", node_tls_secret_name(cluster), ns)
    if ca_secret is None:
        raise ValueError(f"Secret {node_tls_secret_name(cluster)} not found (the cluster's CA)")
    leaf = instancetls.leaf(cluster, ns)
    secret = secret_created_once(
        kube, leaf.secret, ns,
        lambda: instancetls.secret(cluster, ns, nodetls.leaf_entries(ca_secret["data"], leaf, at), owner), event,
        f"the database instances' certificate for the -rw/-ro/-r Services, {nodetls.CERT_DAYS} days, "
        f"signed by the cluster's CA")
    secret = reissue_if_due(kube, secret, leaf, ca_secret, ns, event, at)
    try:
        state.cluster_ca_pem = nodetls.ca_pem(ca_secret.get("data"))
    except ValueError as exc:
        raise ValueError(f"Secret {node_tls_secret_name(cluster)}: {exc}") from exc
    state.instance_tls_expiry = nodetls.expiry(secret.get("data"))
    return state.cluster_ca_pem


def user_secret_problem(kube: Kube, ns: str, secret: str | None, at: dt.datetime | None = None) -> str | None:
    """Why the instances cannot start with the PostgreSQL port's certificate the spec
    names (spec.instance.tls.secretName); None when it names none or the Secret serves."""
    if secret is None:
        return None
    return instancetls.user_secret_problem(secret, kube.read("Secret", secret, ns), at or nodetls.now())
