"""The storage nodes' key on Kubernetes (pure: names, the Secret's entries, the pods'
volumes; light to import: `sql serve` and `workload --from-cluster` import it).

Per AuroraCluster the operator makes one Secret `<cluster>-node-auth` (created once,
never overwritten): `node-auth.key` (the fleet's key, docs/wire.md "Authentication and
roles") and the tokens derived from it, `writer.token` and `reader.token`. Each pod gets
only the entries it needs (`items:`): storage pods the key, a writer instance (and the
verifying workload Job) the writer token, a replica the reader token. The operator and
tools that may read Secrets derive every role's token from the key."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from tidemark_compute.topology import NODE_KEY_FILE, token_file
from tidemark_protocol.node_auth import NodeCredentials, Role, parse_keys, role_token

from .model import node_auth_secret_name

KEY_ITEM = NODE_KEY_FILE  # the key's entry in the Secret, and its file name in a storage pod
TOKEN_ROLES = (Role.WRITER, Role.READER)  # the tokens the Secret carries besides the key
KEY_MOUNT = "/etc/tidemark/node-auth"
TOKENS_MOUNT = "/etc/tidemark/node-tokens"
KEY_VOLUME = "node-auth"
TOKENS_VOLUME = "node-tokens"


def key_path() -> str:
    """What a storage pod's `--auth-key-file` names."""
    return f"{KEY_MOUNT}/{KEY_ITEM}"


def secret_entries(key: str) -> dict[str, str]:
    """The Secret's entries (plain text) for a new KEY."""
    return {KEY_ITEM: key + "\n", **{token_file(r): role_token(key, r) + "\n" for r in TOKEN_ROLES}}


def credentials_from_data(data: Mapping[str, str] | None) -> NodeCredentials:
    """Every role's token, from the Secret's `data` (base64, as read from the API);
    BadKey when it holds no usable key."""
    raw = (data or {}).get(KEY_ITEM)
    text = base64.b64decode(raw).decode() if raw else ""
    return NodeCredentials.from_keys(parse_keys(text))


def _secret_volume(name: str, cluster: str, items: Sequence[str]) -> dict[str, Any]:
    # 0400: with the pods' fsGroup the kubelet makes the files group-readable (0440,
    # group 10001), so the non-root user (10001, in that group) reads them; nobody else.
    return {"name": name, "secret": {"secretName": node_auth_secret_name(cluster), "defaultMode": 0o400,
                                     "items": [{"key": i, "path": i} for i in items]}}


def key_volume(cluster: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of a storage pod: the key only."""
    return (_secret_volume(KEY_VOLUME, cluster, [KEY_ITEM]),
            {"name": KEY_VOLUME, "mountPath": KEY_MOUNT, "readOnly": True})


def token_volume(cluster: str, roles: Sequence[Role]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of a pod that calls nodes in ROLES: their tokens only,
    never the key (`--node-tokens-dir TOKENS_MOUNT`)."""
    return (_secret_volume(TOKENS_VOLUME, cluster, [token_file(r) for r in roles]),
            {"name": TOKENS_VOLUME, "mountPath": TOKENS_MOUNT, "readOnly": True})
