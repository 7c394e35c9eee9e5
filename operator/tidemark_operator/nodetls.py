"""TLS of the storage nodes on Kubernetes (pure: names, the Secret's entries, the pods'
volumes and flags; light to import: `sql serve` and `workload --from-cluster` import it).

Per AuroraCluster the operator makes one Secret `<cluster>-node-tls` (type
kubernetes.io/tls): `ca.crt` (the cluster's own CA), `tls.crt`/`tls.key` (the storage
nodes' serving certificate, signed by that CA) and `ca.key` (the CA's key, which only the
operator reads: it re-issues the serving certificate with the same CA before expiry).
Storage pods mount ca.crt, tls.crt and tls.key; every other client of the nodes (instance
pods, the workload Job) mounts ca.crt alone.

Clients dial storage nodes by pod IP, which is not known when the certificate is issued,
so node hops on Kubernetes are verify-ca (the chain must lead to the cluster's CA; the host
name is not checked). The certificate still names the headless Service's pods
(`*.<cluster>-nodes.<ns>.svc`), for a client that dials those names and checks them."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from tidemark_protocol import pki

from .model import NODE_PORT, node_tls_secret_name, service_name

SECRET_TYPE = "kubernetes.io/tls"
CA_ITEM = "ca.crt"
CERT_ITEM = "tls.crt"
KEY_ITEM = "tls.key"
CA_KEY_ITEM = "ca.key"  # the operator's alone: mounted by no pod
MOUNT = "/etc/tidemark/node-tls"
VOLUME = "node-tls"
CA_MOUNT = "/etc/tidemark/node-ca"  # a client pod's: ca.crt alone
CA_VOLUME = "node-ca"
CA_DAYS = 3650  # the CA is not rotated (docs/operator.md): long-lived
CERT_DAYS = 90
RENEW_BEFORE = dt.timedelta(days=30)  # re-issued this long before expiry (a pass checks)
TLS_FLAG = "--tls-cert"  # a storage pod whose command has it serves https


def ca_path() -> str:
    """What a client pod's `--node-ca-file` names."""
    return f"{CA_MOUNT}/{CA_ITEM}"


def node_args() -> list[str]:
    """A storage pod's TLS flags: its certificate, and the CA its peer calls (gossip,
    hydration, scrub repair) verify against, chain only (peers are dialled by pod IP)."""
    return [TLS_FLAG, f"{MOUNT}/{CERT_ITEM}", "--tls-key", f"{MOUNT}/{KEY_ITEM}",
            "--tls-ca", f"{MOUNT}/{CA_ITEM}", "--tls-verify", "ca"]


def serves_tls(command: Sequence[str] | None) -> bool:
    """Whether a storage pod with COMMAND (its container's command + args) serves https:
    a pod made before TLS serves plain http until its StatefulSet rolls it."""
    return TLS_FLAG in (command or ())


def pod_command(pod_spec: Mapping[str, Any] | None) -> list[str]:
    """The first container's command + args (the storage container) of a pod spec."""
    containers = (pod_spec or {}).get("containers") or [{}]
    return [*(containers[0].get("command") or []), *(containers[0].get("args") or [])]


def node_url(host: str, tls: bool = True) -> str:
    return f"{'https' if tls else 'http'}://{host}:{NODE_PORT}"


def hosts(cluster: str, namespace: str) -> list[str]:
    """The serving certificate's DNS names: the headless Service's pods (every pod
    name, including pods added later by raising nodesPerZone) and the Service."""
    svc = f"{service_name(cluster)}.{namespace}.svc"
    return [f"*.{svc}", f"*.{svc}.cluster.local", svc, f"{svc}.cluster.local"]


def _decode(data: Mapping[str, str] | None, item: str) -> bytes:
    raw = (data or {}).get(item)
    if not raw:
        raise ValueError(f"no {item}")
    return base64.b64decode(raw)


def _encode(entries: Mapping[str, bytes]) -> dict[str, str]:
    return {k: base64.b64encode(v).decode() for k, v in entries.items()}


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Leaf:
    """One serving certificate signed by a cluster's CA: the Secret it lives in, the
    names it carries and what events call it. The storage nodes' (`node_leaf`) shares
    its Secret with the CA; the instances' (instancetls.py) has a Secret of its own."""

    secret: str
    common_name: str
    hosts: tuple[str, ...]
    what: str  # "the storage nodes'": in the CertificateRenewed event


def node_leaf(cluster: str, namespace: str) -> Leaf:
    return Leaf(node_tls_secret_name(cluster), f"{service_name(cluster)}.{namespace}.svc",
                tuple(hosts(cluster, namespace)), "the storage nodes'")


def new_entries(cluster: str, namespace: str, at: dt.datetime | None = None) -> dict[str, str]:
    """A new CA and a serving certificate signed by it, valid from AT (now): the Secret's
    `data` (base64)."""
    at = at or now()
    ca, ca_key = pki.make_ca(f"tidemark {namespace}/{cluster} node CA", CA_DAYS, at)
    return _encode({CA_ITEM: pki.cert_pem(ca), CA_KEY_ITEM: pki.key_pem(ca_key),
                    **_serving(node_leaf(cluster, namespace), ca, ca_key, at)})


def _serving(leaf: Leaf, ca: x509.Certificate, ca_key: Any, at: dt.datetime) -> dict[str, bytes]:
    cert, key = pki.issue(ca, ca_key, leaf.common_name, leaf.hosts, CERT_DAYS, at)
    return {CERT_ITEM: cert, KEY_ITEM: key}


def needs_renewal(data: Mapping[str, str] | None, cluster: str, namespace: str,
                  at: dt.datetime | None = None) -> bool:
    """The storage nodes' certificate is due (leaf_due, the CA in the same Secret)."""
    return leaf_due(data, data, node_leaf(cluster, namespace), at)


def leaf_due(data: Mapping[str, str] | None, ca_data: Mapping[str, str] | None, leaf: Leaf,
             at: dt.datetime | None = None) -> bool:
    """LEAF's certificate in DATA is missing, unreadable, close to expiry, names other
    hosts, is not signed by the CA in CA_DATA or carries another ca.crt; ValueError when
    the CA itself is unusable (the pods trust it: a new one is not made behind their back)."""
    ca, _key = pki.load_ca(_decode(ca_data, CA_ITEM), _decode(ca_data, CA_KEY_ITEM))
    try:
        cert = x509.load_pem_x509_certificate(_decode(data, CERT_ITEM))
        _decode(data, KEY_ITEM)
        same_ca = _decode(data, CA_ITEM) == _decode(ca_data, CA_ITEM)
    except ValueError:
        return True
    return not (same_ca and pki.current(cert, RENEW_BEFORE, at or now(), leaf.hosts) and pki.signed_by(cert, ca))


def leaf_entries(ca_data: Mapping[str, str], leaf: Leaf, at: dt.datetime | None = None) -> dict[str, str]:
    """A new certificate for LEAF signed by the CA in CA_DATA, with that CA's ca.crt
    (unchanged, so every client's trust stays valid): `data` entries (base64)."""
    ca, ca_key = pki.load_ca(_decode(ca_data, CA_ITEM), _decode(ca_data, CA_KEY_ITEM))
    return {CA_ITEM: ca_data[CA_ITEM], **_encode(_serving(leaf, ca, ca_key, at or now()))}


def renewed_entries(data: Mapping[str, str], cluster: str, namespace: str,
                    at: dt.datetime | None = None) -> dict[str, str]:
    """DATA with a new storage nodes' certificate signed by the same CA."""
    return {**dict(data), **leaf_entries(data, node_leaf(cluster, namespace), at)}


def expiry(data: Mapping[str, str] | None) -> dt.datetime | None:
    """When the Secret's serving certificate expires (None: none readable)."""
    try:
        return x509.load_pem_x509_certificate(_decode(data, CERT_ITEM)).not_valid_after_utc
    except ValueError:
        return None


def ca_pem(data: Mapping[str, str] | None) -> str:
    """The CA certificate (PEM text) from the Secret's `data`; ValueError when absent."""
    return _decode(data, CA_ITEM).decode()


def secret_volume(name: str, secret: str, items: Sequence[str]) -> dict[str, Any]:
    """A pod volume of SECRET's ITEMS: 0400 + the pods' fsGroup, as the node-auth volumes
    (nodekeys.py); no subPath in the mounts, so the kubelet refreshes renewed files."""
    return {"name": name, "secret": {"secretName": secret, "defaultMode": 0o400,
                                     "items": [{"key": i, "path": i} for i in items]}}


def node_volume(cluster: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of a storage pod: CA certificate, its certificate and
    key, never the CA's key. No subPath: the kubelet refreshes the files on renewal and
    the node reloads them."""
    return (secret_volume(VOLUME, node_tls_secret_name(cluster), [CA_ITEM, CERT_ITEM, KEY_ITEM]),
            {"name": VOLUME, "mountPath": MOUNT, "readOnly": True})


def ca_volume(cluster: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of a client of the nodes: the CA certificate only."""
    return (secret_volume(CA_VOLUME, node_tls_secret_name(cluster), [CA_ITEM]),
            {"name": CA_VOLUME, "mountPath": CA_MOUNT, "readOnly": True})
