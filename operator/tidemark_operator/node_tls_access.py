"""The operator's side of one AuroraCluster's node TLS: the `<cluster>-node-tls` Secret
(nodetls.py) created with a new CA when missing, its serving certificate re-issued with
the same CA before expiry (checked every pass against the expiry kept in the cluster's
memo; the Secret is read only when that is near, after an operator restart, or once it
was re-issued), and the trust the operator's own node calls use. No key material is
logged or put in an event."""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Mapping
from typing import Any

from tidemark_compute.topology import client_tls_verify_ca

from . import nodetls
from .kube import Kube
from .model import node_tls_secret_name
from .node_access import Event, secret_created_once
from .placement import Conflict
from .resources import node_tls_secret
from .state import ClusterState


def ensure_secret(kube: Kube, cluster: str, ns: str, owner: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """The Secret as read, created first when missing (a concurrent create wins: read it).
    Also what upgrades a cluster made before node TLS: its pods roll onto it (step 6)."""
    return secret_created_once(
        kube, node_tls_secret_name(cluster), ns,
        lambda: node_tls_secret(cluster, ns, nodetls.new_entries(cluster, ns), owner), event,
        f"the cluster's own CA {nodetls.CA_ITEM} and the storage nodes' certificate, {nodetls.CERT_DAYS} days")


def renew_if_due(kube: Kube, secret: dict[str, Any], cluster: str, ns: str, event: Event,
                 at: dt.datetime | None = None) -> dict[str, Any]:
    """SECRET, the storage nodes' certificate re-issued (same CA) when due."""
    return reissue_if_due(kube, secret, nodetls.node_leaf(cluster, ns), secret, ns, event, at)


def reissue_if_due(kube: Kube, secret: dict[str, Any], leaf: nodetls.Leaf, ca_secret: Mapping[str, Any], ns: str,
                   event: Event, at: dt.datetime | None = None) -> dict[str, Any]:
    """SECRET (LEAF's), its certificate re-issued with the CA of CA_SECRET (the node-tls
    Secret as read) when nodetls.leaf_due says so; a concurrent change (409) is left to
    the next pass. ValueError: an unusable CA."""
    ca_data = ca_secret.get("data") or {}
    try:
        due = nodetls.leaf_due(secret.get("data"), ca_data, leaf, at)
    except ValueError as exc:
        raise ValueError(f"Secret {ca_secret['metadata']['name']}: {exc}") from exc
    if not due:
        return secret
    meta = {k: v for k, v in secret["metadata"].items() if k != "managedFields"}  # keeps resourceVersion: CAS
    renewed = {**secret, "metadata": meta, "data": {**(secret.get("data") or {}),
                                                    **nodetls.leaf_entries(ca_data, leaf, at)}}
    try:
        kube.replace(renewed)
    except Conflict:
        return kube.read("Secret", leaf.secret, ns) or secret
    expires = nodetls.expiry(renewed["data"])
    event("Normal", "CertificateRenewed", f"re-issued {leaf.what} certificate in Secret {leaf.secret} "
                                          f"(same CA; valid until {expires:%Y-%m-%dT%H:%M:%SZ})")
    return kube.read("Secret", leaf.secret, ns) or renewed


def cluster_trust(kube: Kube, state: ClusterState, cluster: str, ns: str, owner: Mapping[str, Any],
                  event: Event, at: dt.datetime | None = None) -> ssl.SSLContext:
    """The trust for CLUSTER's nodes (verify-ca against its CA), the Secret made or its
    certificate renewed on the way when due."""
    at = at or nodetls.now()
    if (state.node_tls is not None and state.node_tls_expiry is not None
            and state.node_tls_expiry - at > nodetls.RENEW_BEFORE):
        return state.node_tls
    secret = renew_if_due(kube, ensure_secret(kube, cluster, ns, owner, event), cluster, ns, event, at)
    data = secret.get("data")
    try:
        context = client_tls_verify_ca(ca_pem=nodetls.ca_pem(data))
    except (ValueError, ssl.SSLError) as exc:
        raise ValueError(f"Secret {node_tls_secret_name(cluster)}: {nodetls.CA_ITEM}: {exc}") from exc
    state.node_tls, state.node_tls_expiry = context, nodetls.expiry(data)
    return context
