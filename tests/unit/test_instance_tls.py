"""Kubernetes instance TLS (#14): the instances' serving certificate in `<cluster>-instance-tls`,
issued from the cluster's one CA (the node-tls Secret's) for the -rw/-ro/-r Services,
made once and re-issued with the same CA before expiry (the node certificate's renewal
code); the CA alone in the `<cluster>-ca` ConfigMap; what the instance pods mount and
serve; the operator's admin calls over real https, verify-ca by pod IP."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from secretfakes import FakeSecrets

from tidemark_compute.topology import client_tls_verify_ca
from tidemark_node.server_tls import ServerTLS
from tidemark_operator import instance_tls_access, instancetls, nodetls
from tidemark_operator.instance_resources import instance_deployment, instance_objects
from tidemark_operator.instances import InstancePod, admin_client, observe
from tidemark_operator.model import SQL_ADMIN_PORT
from tidemark_operator.nodeclient import NodeClient
from tidemark_operator.spec import parse_spec
from tidemark_operator.state import ClusterState
from tidemark_protocol import pki
from tidemark_sql.admin import Admin
from tidemark_sql.cli import sql

pytestmark = pytest.mark.unit

OWNER = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster", "metadata": {"name": "demo", "uid": "u-1"}}
NODE_SECRET, SECRET = "demo-node-tls", "demo-instance-tls"
ADMIN_HOST = "127.0.231.77"  # a loopback address of its own: the operator dials port 5433


def _cert(data: dict[str, str], item: str = nodetls.CERT_ITEM) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(data[item]))


def test_the_instance_certificate_names_the_services_and_is_signed_by_the_clusters_ca() -> None:
    node = nodetls.new_entries("demo", "ns")
    leaf = instancetls.leaf("demo", "ns")
    data = instancetls.secret("demo", "ns", nodetls.leaf_entries(node, leaf), OWNER)["data"]
    assert set(data) == {"ca.crt", "tls.crt", "tls.key"}  # never the CA's key
    assert data["ca.crt"] == node["ca.crt"] and pki.signed_by(_cert(data), _cert(node, "ca.crt"))
    names = pki.names(_cert(data))
    for svc in ("demo-rw", "demo-ro", "demo-r"):
        assert {svc, f"{svc}.ns", f"{svc}.ns.svc", f"{svc}.ns.svc.cluster.local"} <= set(names)
    assert not nodetls.leaf_due(data, node, leaf)
    soon = nodetls.now() + dt.timedelta(days=nodetls.CERT_DAYS) - nodetls.RENEW_BEFORE + dt.timedelta(hours=1)
    assert nodetls.leaf_due(data, node, leaf, soon)
    other = nodetls.new_entries("demo", "ns")  # a CA the pods do not trust
    assert nodetls.leaf_due(data, other, leaf)
    assert nodetls.leaf_due({**data, "ca.crt": other["ca.crt"]}, node, leaf)
    assert nodetls.leaf_due(data, node, instancetls.leaf("other", "ns"))
    with pytest.raises(ValueError, match="ca.key"):
        nodetls.leaf_due(data, {k: v for k, v in node.items() if k != "ca.key"}, leaf)


class FakeKube(FakeSecrets):
    """The node-tls Secret is there already (the pass made it before the instances)."""

    def __init__(self, race: bool = False) -> None:
        super().__init__(race)
        self.secrets[NODE_SECRET] = {"kind": "Secret", "metadata": {"name": NODE_SECRET, "namespace": "ns"},
                                     "data": nodetls.new_entries("demo", "ns")}


def test_operator_issues_the_secret_once_from_the_clusters_ca_renews_it_and_logs_no_key() -> None:
    events: list[tuple[str, str, str]] = []
    kube, state = FakeKube(), ClusterState()
    ca = instance_tls_access.ensure(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e))  # type: ignore[arg-type]
    node = kube.secrets[NODE_SECRET]["data"]
    assert ca == base64.b64decode(node["ca.crt"]).decode() and "PRIVATE" not in ca
    assert kube.created == 1 and [e[1] for e in events] == ["Created"]
    secret = kube.secrets[SECRET]
    assert secret["type"] == "kubernetes.io/tls" and secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    first = dict(secret["data"])
    # cached: the next pass reads nothing while the expiry is far
    kube.secrets.clear()
    assert instance_tls_access.ensure(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e)) == ca  # type: ignore[arg-type]
    kube.secrets.update({NODE_SECRET: {"kind": "Secret", "metadata": {"name": NODE_SECRET, "namespace": "ns"},
                                       "data": node}, SECRET: secret})
    later = nodetls.now() + dt.timedelta(days=nodetls.CERT_DAYS - 1)
    instance_tls_access.ensure(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e), later)  # type: ignore[arg-type]
    assert kube.created == 1 and kube.replaced == 1 and [e[1] for e in events] == ["Created", "CertificateRenewed"]
    assert "database instances'" in events[-1][2] and SECRET in events[-1][2]
    now = kube.secrets[SECRET]["data"]
    assert now["ca.crt"] == first["ca.crt"] == node["ca.crt"] and now["tls.crt"] != first["tls.crt"]
    assert pki.signed_by(_cert(now), _cert(node, "ca.crt"))
    for key in (first["tls.key"], now["tls.key"], node["ca.key"]):
        line = base64.b64decode(key).decode().splitlines()[1]
        assert not any(line in e[2] for e in events)
    # a concurrent change wins (the next pass looks again); no CA: the pass stops
    raced = FakeKube(race=True)
    instance_tls_access.ensure(raced, ClusterState(), "demo", "ns", OWNER, lambda *e: None)  # type: ignore[arg-type]
    instance_tls_access.ensure(raced, ClusterState(), "demo", "ns", OWNER, lambda *e: None, later)  # type: ignore[arg-type]
    assert raced.replaced == 0
    bare = FakeKube()
    bare.secrets.clear()
    with pytest.raises(ValueError, match=NODE_SECRET):
        instance_tls_access.ensure(bare, ClusterState(), "demo", "ns", OWNER, lambda *e: None)  # type: ignore[arg-type]


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


@pytest.mark.parametrize("role", ["writer", "replica"])
def test_instance_pods_mount_their_certificate_serve_tls_and_are_probed_over_https(role: str) -> None:
    pod = instance_deployment("demo", "ns", role, 1, parse_spec({}), OWNER)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    items = {v["name"]: (v["secret"]["secretName"], [i["key"] for i in v["secret"]["items"]])
             for v in pod["volumes"] if v.get("secret")}
    assert items["instance-tls"] == (SECRET, ["tls.crt", "tls.key"])
    assert all("ca.key" not in keys for _name, keys in items.values())
    mount = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}["instance-tls"]
    cmd = c["command"]
    assert (_arg(cmd, "--tls-cert"), _arg(cmd, "--tls-key")) == (f"{mount}/tls.crt", f"{mount}/tls.key")
    assert "--require-tls" in cmd  # spec.instance.tls.required: true by default (RDS's rds.force_ssl)
    relaxed = instance_deployment("demo", "ns", role, 1, parse_spec({"instance": {"tls": {"required": False}}}), OWNER)
    assert "--require-tls" not in relaxed["spec"]["template"]["spec"]["containers"][0]["command"]
    assert nodetls.serves_tls(cmd)  # what the operator's index reads: its admin endpoint is https
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": SQL_ADMIN_PORT, "scheme": "HTTPS"}
    assert "subPath" not in str(c["volumeMounts"])  # the kubelet refreshes renewed files


def test_the_ca_configmap_holds_the_ca_certificate_alone() -> None:
    ca = nodetls.ca_pem(nodetls.new_entries("demo", "ns"))
    objs = instance_objects("demo", "ns", parse_spec({}), OWNER, ca_pem=ca)
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap"]
    assert cm["metadata"]["name"] == "demo-ca" and cm["data"] == {"ca.crt": ca}
    assert cm["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert not [o for o in instance_objects("demo", "ns", parse_spec({}), OWNER) if o["kind"] == "ConfigMap"]


def test_admin_urls_follow_the_pods_command() -> None:
    assert InstancePod("p", "writer", "10.0.0.1", True, tls=True).admin_url == "https://10.0.0.1:5433"
    assert InstancePod("p", "writer", "10.0.0.1", True).admin_url == "http://10.0.0.1:5433"  # made before TLS


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[tuple[Admin, dict[str, str]]]:
    """An instance's admin endpoint on ADMIN_HOST:5433 with the instance certificate (which
    names no IP), as an instance pod serves it."""
    node = nodetls.new_entries("demo", "ns")
    data = nodetls.leaf_entries(node, instancetls.leaf("demo", "ns"))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(base64.b64decode(data["tls.crt"]))
    key.write_bytes(base64.b64decode(data["tls.key"]))
    server = Admin(lambda: {"role": "writer", "serving": True})
    url = await server.start(ADMIN_HOST, SQL_ADMIN_PORT, ServerTLS(str(cert), str(key)).context)
    assert url == f"https://{ADMIN_HOST}:{SQL_ADMIN_PORT}"
    try:
        yield server, node
    finally:
        await server.close()


async def test_the_operator_reads_an_https_admin_endpoint_by_ip_verified_against_the_clusters_ca(
        admin: tuple[Admin, dict[str, str]]) -> None:
    _server, node = admin
    pod = InstancePod("demo-writer-x", "writer", ADMIN_HOST, True, tls=True)
    client = NodeClient()
    try:
        ours, theirs = ClusterState(), ClusterState()
        ours.node_tls = client_tls_verify_ca(ca_pem=nodetls.ca_pem(node))
        theirs.node_tls = client_tls_verify_ca(ca_pem=nodetls.ca_pem(nodetls.new_entries("demo", "ns")))
        assert (await observe(admin_client(client, ours), [pod]))[pod.name] == {"role": "writer", "serving": True}
        assert (await observe(admin_client(client, theirs), [pod]))[pod.name] is None  # another CA
        assert (await observe(admin_client(client, ClusterState()), [pod]))[pod.name] is None  # the system's
        plain = InstancePod(pod.name, "writer", ADMIN_HOST, True, tls=False)
        assert (await observe(admin_client(client, ours), [plain]))[pod.name] is None  # http to https
    finally:
        await client.close()


def _user_secret(cert: bytes | None, key: bytes | None) -> dict[str, Any]:
    entries = {k: v for k, v in (("tls.crt", cert), ("tls.key", key)) if v is not None}
    return {"type": "kubernetes.io/tls", "data": {k: base64.b64encode(v).decode() for k, v in entries.items()}}


def test_a_users_secret_is_checked_without_quoting_its_key() -> None:
    """spec.instance.tls.secretName (a cert-manager Certificate's Secret, say): what makes
    it unusable is said in one line that never carries its data."""
    now = dt.datetime.now(dt.UTC)
    ca, ca_key = pki.make_ca("a company CA", 30, now)
    cert, key = pki.issue(ca, ca_key, "demo-rw.ns.svc", ["demo-rw.ns.svc"], 30, now)
    _other_cert, other_key = pki.issue(ca, ca_key, "x", ["x"], 30, now)
    problem = instancetls.user_secret_problem
    assert problem("mine", _user_secret(cert, key), now) is None
    assert problem("mine", None, now) == "TLS Secret mine not found"
    assert problem("mine", _user_secret(cert, None), now) == "TLS Secret mine has no tls.key"
    assert problem("mine", {"data": {}}, now) == "TLS Secret mine has no tls.crt or tls.key"
    assert problem("mine", _user_secret(cert, other_key), now) == "TLS Secret mine: tls.key is not the private key of tls.crt"
    assert problem("mine", _user_secret(b"junk", key), now) == "TLS Secret mine: tls.crt is not a PEM certificate"
    encrypted = serialization.load_pem_private_key(key, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw"))
    assert problem("mine", _user_secret(cert, encrypted), now) == \
        "TLS Secret mine: tls.key is not an unencrypted PEM private key"
    expired = problem("mine", _user_secret(cert, key), now + dt.timedelta(days=31))
    assert expired is not None and expired.startswith("TLS Secret mine: tls.crt is valid ")
    assert problem("mine", {"data": {"tls.crt": "%%%", "tls.key": "%%%"}}, now) == "TLS Secret mine: its data is not base64"
    for text in filter(None, [problem("mine", _user_secret(cert, other_key), now)]):
        assert "PRIVATE" not in text and base64.b64encode(key).decode()[:20] not in text


@pytest.mark.parametrize("role", ["writer", "replica"])
def test_a_users_secret_is_mounted_and_served_on_the_sql_port_the_admin_port_keeps_the_clusters(role: str) -> None:
    spec = parse_spec({"instance": {"tls": {"secretName": "mine"}}})
    pod = instance_deployment("demo", "ns", role, 1, spec, OWNER)["spec"]["template"]["spec"]
    c = pod["containers"][0]
    items = {v["name"]: (v["secret"]["secretName"], [i["key"] for i in v["secret"]["items"]])
             for v in pod["volumes"] if v.get("secret")}
    assert items["sql-tls"] == ("mine", ["tls.crt", "tls.key"]) and items["instance-tls"] == (SECRET, ["tls.crt", "tls.key"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    cmd = c["command"]
    assert (_arg(cmd, "--sql-tls-cert"), _arg(cmd, "--sql-tls-key")) == (f"{mounts['sql-tls']}/tls.crt",
                                                                         f"{mounts['sql-tls']}/tls.key")
    assert _arg(cmd, "--tls-cert") == f"{mounts['instance-tls']}/tls.crt"
    plain = instance_deployment("demo", "ns", role, 1, parse_spec({}), OWNER)["spec"]["template"]["spec"]
    assert "--sql-tls-cert" not in plain["containers"][0]["command"]
    assert "sql-tls" not in {v["name"] for v in plain["volumes"]}


def test_sql_serve_refuses_half_a_user_certificate(tmp_path: Path) -> None:
    pem = tmp_path / "tls.crt"
    pem.write_text("x")
    done = CliRunner().invoke(sql, ["serve", "--dir", str(tmp_path), "--sql-tls-cert", str(pem)])
    assert done.exit_code == 2 and "--sql-tls-cert and --sql-tls-key go together" in done.output
