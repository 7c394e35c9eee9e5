"""TLS of the database instances on Kubernetes (pure: names, the Secret, the CA
ConfigMap, the pods' volume and flags).

Per AuroraCluster the operator makes `<cluster>-instance-tls` (kubernetes.io/tls, as
CloudNativePG's server Secret): `ca.crt`, `tls.crt`, `tls.key`, a serving certificate
signed by the cluster's own CA (the one in `<cluster>-node-tls`, nodetls.py: one CA per
cluster) for the `-rw`, `-ro` and `-r` Services, so a client can check the host name
(sslmode=verify-full with host NAME-rw.NS.svc). The instance pods mount tls.crt and
tls.key and serve it on the PostgreSQL port and on their admin endpoint (probes, status,
the replica feed; dialled by pod IP: verify-ca against the same CA). The CA certificate
alone is in the ConfigMap `<cluster>-ca`, for users who may not read Secrets.

A user may bring the PostgreSQL port's certificate instead (`spec.instance.tls.secretName`:
a kubernetes.io/tls Secret, e.g. the one a cert-manager Certificate keeps renewed, as
CloudNativePG's serverTLSSecret): the pods serve it on that port (`sql serve
--sql-tls-cert`) and re-read it when it changes; the operator reads it only to check it
and never writes it. The admin endpoint keeps `<cluster>-instance-tls`: replicas and the
operator dial it by pod IP and verify it against the cluster's CA."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from typing import Any

from tidemark_protocol import pki

from . import nodetls
from .model import ca_configmap_name, endpoint_service_name, instance_tls_secret_name
from .resources import _meta, _stamp

MOUNT = "/etc/tidemark/instance-tls"
VOLUME = "instance-tls"
USER_MOUNT = "/etc/tidemark/sql-tls"  # spec.instance.tls.secretName's
USER_VOLUME = "sql-tls"
SERVICE_KINDS = ("rw", "ro", "r")


def hosts(cluster: str, namespace: str) -> list[str]:
    """Each endpoint Service as a client in the cluster may name it."""
    out = []
    for kind in SERVICE_KINDS:
        svc = endpoint_service_name(cluster, kind)
        out += [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc", f"{svc}.{namespace}.svc.cluster.local"]
    return out


def leaf(cluster: str, namespace: str) -> nodetls.Leaf:
    return nodetls.Leaf(instance_tls_secret_name(cluster), f"{endpoint_service_name(cluster, 'rw')}.{namespace}.svc",
                        tuple(hosts(cluster, namespace)), "the database instances'")


def secret(cluster: str, namespace: str, data: Mapping[str, str],
           owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`<cluster>-instance-tls` (DATA: nodetls.leaf_entries, base64: never the CA's key)."""
    return _stamp({
        "apiVersion": "v1", "kind": "Secret", "type": nodetls.SECRET_TYPE,
        "metadata": _meta(instance_tls_secret_name(cluster), namespace, cluster),
        "data": {k: data[k] for k in (nodetls.CA_ITEM, nodetls.CERT_ITEM, nodetls.KEY_ITEM)},
    }, owner)


def ca_configmap(cluster: str, namespace: str, ca_pem: str, owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`<cluster>-ca`: `ca.crt`, the cluster's CA certificate (no key: anyone may read it)."""
    return _stamp({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": _meta(ca_configmap_name(cluster), namespace, cluster),
        "data": {nodetls.CA_ITEM: ca_pem},
    }, owner)


def volume(cluster: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of an instance pod: its certificate and key."""
    return (nodetls.secret_volume(VOLUME, instance_tls_secret_name(cluster), [nodetls.CERT_ITEM, nodetls.KEY_ITEM]),
            {"name": VOLUME, "mountPath": MOUNT, "readOnly": True})


def user_volume(secret: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod volume, container mount) of the user's certificate and key for the PostgreSQL port."""
    return (nodetls.secret_volume(USER_VOLUME, secret, [nodetls.CERT_ITEM, nodetls.KEY_ITEM]),
            {"name": USER_VOLUME, "mountPath": USER_MOUNT, "readOnly": True})


def args(user_secret: str | None = None) -> list[str]:
    """`sql serve` flags: TLS on the PostgreSQL port and, with --from-cluster, https on the
    admin port, with the cluster's certificate; the PostgreSQL port with the user's when
    USER_SECRET names one."""
    flags = [nodetls.TLS_FLAG, f"{MOUNT}/{nodetls.CERT_ITEM}", "--tls-key", f"{MOUNT}/{nodetls.KEY_ITEM}"]
    if user_secret is not None:
        flags += ["--sql-tls-cert", f"{USER_MOUNT}/{nodetls.CERT_ITEM}",
                  "--sql-tls-key", f"{USER_MOUNT}/{nodetls.KEY_ITEM}"]
    return flags


def user_secret_problem(name: str, secret: Mapping[str, Any] | None, at: dt.datetime) -> str | None:
    """Why the Secret NAME (SECRET: as read, None when absent) cannot serve the PostgreSQL
    port AT; None when it can. Never quotes the Secret's data."""
    if secret is None:
        return f"TLS Secret {name} not found"
    data = secret.get("data") or {}
    missing = [i for i in (nodetls.CERT_ITEM, nodetls.KEY_ITEM) if not data.get(i)]
    if missing:
        return f"TLS Secret {name} has no {' or '.join(missing)}"
    try:
        cert, key = (base64.b64decode(data[i], validate=True) for i in (nodetls.CERT_ITEM, nodetls.KEY_ITEM))
    except ValueError:
        return f"TLS Secret {name}: its data is not base64"
    problem = pki.pair_problem(cert, key, at)
    return None if problem is None else f"TLS Secret {name}: {problem}"
