"""The operator's credentials for one AuroraCluster's storage nodes: the cluster's
`<cluster>-node-auth` Secret (nodekeys.py), created with a new random key when missing
(never overwritten: the pods hold the key), read once and kept in the cluster's memo;
read again after an operator restart or a pass in which a node refused the token (the
key was changed in the Secret)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from typing import Any

from tidemark_protocol.node_auth import BadKey, NodeCredentials

from . import nodekeys
from .kube import Kube
from .model import node_auth_secret_name
from .placement import Conflict
from .resources import node_auth_secret
from .state import ClusterState

Event = Callable[[str, str, str], None]  # (type, reason, message)
KEY_BYTES = 32  # secrets.token_hex: 64 characters, over node_auth.MIN_KEY_CHARS


def secret_created_once(kube: Kube, name: str, ns: str, make: Callable[[], dict[str, Any]], event: Event,
                        what: str) -> dict[str, Any]:
    """Secret NAME as read, created from MAKE() first when missing (a concurrent create
    wins: read it); never overwritten. WHAT is said in the Created event."""
    secret = kube.read("Secret", name, ns)
    if secret is not None:
        return secret
    try:
        kube.create(make())
        event("Normal", "Created", f"created Secret {name} ({what})")
    except Conflict:
        pass
    secret = kube.read("Secret", name, ns)
    if secret is None:
        raise RuntimeError(f"Secret {name} vanished right after it was created")
    return secret


def ensure_secret(kube: Kube, cluster: str, ns: str, owner: Mapping[str, Any], event: Event) -> dict[str, Any]:
    """The node-auth Secret as read, created first when missing."""
    return secret_created_once(
        kube, node_auth_secret_name(cluster), ns,
        lambda: node_auth_secret(cluster, ns, secrets.token_hex(KEY_BYTES), owner), event,
        f"the storage nodes' key {nodekeys.KEY_ITEM}; "
        f"tokens {', '.join(t.value + '.token' for t in nodekeys.TOKEN_ROLES)}")


def cluster_credentials(kube: Kube, state: ClusterState, cluster: str, ns: str, owner: Mapping[str, Any],
                        event: Event) -> NodeCredentials:
    """Every role's token for CLUSTER's nodes (the operator calls them as admin)."""
    if state.node_credentials is not None:
        return state.node_credentials
    secret = ensure_secret(kube, cluster, ns, owner, event)
    try:
        creds = nodekeys.credentials_from_data(secret.get("data"))
    except BadKey as exc:
        raise ValueError(f"Secret {node_auth_secret_name(cluster)}: {exc}") from exc
    state.node_credentials = creds
    return creds
