"""Kubernetes node TLS (#14): the cluster's CA and serving certificate in its node-tls
Secret (made once, re-issued with the same CA before expiry), who mounts what of it,
and verify-ca (the chain, not the host name: nodes are dialled by pod IP) over real TLS."""

from __future__ import annotations

import base64
import datetime as dt
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from cryptography import x509
from secretfakes import FakeSecrets

from tidemark_cli.chaos_job import WorkloadJob
from tidemark_compute.topology import client_tls_verify_ca
from tidemark_node.tls import peer_trust
from tidemark_operator import node_tls_access, nodetls
from tidemark_operator import placement as pl
from tidemark_operator.instance_resources import instance_deployment
from tidemark_operator.nodeclient import NodeClient, NodeError
from tidemark_operator.resources import statefulset
from tidemark_operator.spec import parse_spec
from tidemark_operator.state import ClusterState
from tidemark_operator.status import PodObs
from tidemark_operator.topology import topology_from_objects
from tidemark_protocol import pki
from tidemark_protocol.node_auth import NodeCredentials

pytestmark = pytest.mark.unit

OWNER = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster", "metadata": {"name": "demo", "uid": "u-1"}}
SECRET = "demo-node-tls"


def _pem(data: dict[str, str], item: str) -> bytes:
    return base64.b64decode(data[item])


def _cert(data: dict[str, str], item: str = nodetls.CERT_ITEM) -> x509.Certificate:
    return x509.load_pem_x509_certificate(_pem(data, item))


def _tls_items(pod: dict[str, Any]) -> dict[str, list[str]]:
    """volume name -> the entries of the node-tls Secret it projects."""
    return {v["name"]: [i["key"] for i in v["secret"]["items"]] for v in pod["volumes"]
            if (v.get("secret") or {}).get("secretName") == SECRET}


def _mounts(pod: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_the_secret_holds_a_ca_and_a_certificate_it_signed_for_the_headless_services_pods() -> None:
    data = nodetls.new_entries("demo", "ns")
    assert set(data) == {"ca.crt", "ca.key", "tls.crt", "tls.key"}
    ca, cert = _cert(data, "ca.crt"), _cert(data)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert pki.signed_by(cert, ca) and not pki.signed_by(ca, _cert(nodetls.new_entries("demo", "ns"), "ca.crt"))
    assert "*.demo-nodes.ns.svc" in pki.names(cert) and "*.demo-nodes.ns.svc.cluster.local" in pki.names(cert)
    assert "demo-nodes.ns.svc" in pki.names(cert)
    days = (cert.not_valid_after_utc - nodetls.now()).days
    assert nodetls.CERT_DAYS - 1 <= days <= nodetls.CERT_DAYS
    assert not nodetls.needs_renewal(data, "demo", "ns")


def test_the_certificate_is_reissued_with_the_same_ca_before_it_expires() -> None:
    data = nodetls.new_entries("demo", "ns")
    soon = nodetls.now() + dt.timedelta(days=nodetls.CERT_DAYS) - nodetls.RENEW_BEFORE + dt.timedelta(hours=1)
    assert not nodetls.needs_renewal(data, "demo", "ns", nodetls.now() + dt.timedelta(days=30))
    assert nodetls.needs_renewal(data, "demo", "ns", soon)
    renewed = nodetls.renewed_entries(data, "demo", "ns")
    assert renewed["ca.crt"] == data["ca.crt"] and renewed["ca.key"] == data["ca.key"]
    assert renewed["tls.crt"] != data["tls.crt"] and renewed["tls.key"] != data["tls.key"]
    assert pki.signed_by(_cert(renewed), _cert(data, "ca.crt"))
    # a certificate of another CA, another cluster's names or a missing key: re-issued too
    other = nodetls.new_entries("demo", "ns")
    assert nodetls.needs_renewal({**data, "tls.crt": other["tls.crt"]}, "demo", "ns")
    assert nodetls.needs_renewal(data, "other", "ns")
    assert nodetls.needs_renewal({k: v for k, v in data.items() if k != "tls.key"}, "demo", "ns")
    with pytest.raises(ValueError, match="ca.key"):  # never a new CA behind the pods' back
        nodetls.needs_renewal({k: v for k, v in data.items() if k != "ca.key"}, "demo", "ns")


class FakeKube(FakeSecrets):
    """The node-tls Secret alone (what node_tls_access makes)."""

    def read(self, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        assert name == SECRET
        return super().read(kind, name, ns)

    @property
    def secret(self) -> dict[str, Any] | None:
        return self.secrets.get(SECRET)

    @secret.setter
    def secret(self, value: dict[str, Any] | None) -> None:
        self.secrets.pop(SECRET, None)
        if value is not None:
            self.secrets[SECRET] = value


def test_operator_creates_the_secret_once_renews_it_with_the_same_ca_and_logs_no_key() -> None:
    events: list[tuple[str, str, str]] = []
    kube, state = FakeKube(), ClusterState()
    trust = node_tls_access.cluster_trust(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e))  # type: ignore[arg-type]
    assert isinstance(trust, ssl.SSLContext) and not trust.check_hostname and trust.verify_mode == ssl.CERT_REQUIRED
    assert kube.created == 1 and [e[1] for e in events] == ["Created"]
    secret = kube.secret
    assert secret is not None and secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    first = dict(secret["data"])
    # cached: the next pass reads nothing while expiry is far
    kube.secret = None
    assert node_tls_access.cluster_trust(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e)) is trust  # type: ignore[arg-type]
    kube.secret = secret
    later = nodetls.now() + dt.timedelta(days=nodetls.CERT_DAYS - 1)
    node_tls_access.cluster_trust(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e), later)  # type: ignore[arg-type]
    assert kube.created == 1 and kube.replaced == 1 and [e[1] for e in events] == ["Created", "CertificateRenewed"]
    now = kube.secret["data"]  # type: ignore[index]
    assert now["ca.crt"] == first["ca.crt"] and now["tls.crt"] != first["tls.crt"]
    for key in (first["tls.key"], first["ca.key"], now["tls.key"]):
        pem = base64.b64decode(key).decode()
        assert not any(pem.splitlines()[1] in e[2] for e in events)
    # a concurrent change wins: the next pass looks again
    raced = FakeKube(race=True)
    node_tls_access.cluster_trust(raced, ClusterState(), "demo", "ns", OWNER, lambda *e: None)  # type: ignore[arg-type]
    node_tls_access.cluster_trust(raced, ClusterState(), "demo", "ns", OWNER, lambda *e: None, later)  # type: ignore[arg-type]
    assert raced.replaced == 0


def test_storage_pods_serve_https_with_the_mounted_certificate_and_verify_peers_by_ca() -> None:
    pod = statefulset("demo", "ns", "zone-a", parse_spec({}), OWNER)["spec"]["template"]["spec"]
    cmd = pod["containers"][0]["command"]
    assert _tls_items(pod) == {"node-tls": ["ca.crt", "tls.crt", "tls.key"]}  # never ca.key
    mount = _mounts(pod)["node-tls"]
    assert (_arg(cmd, "--tls-cert"), _arg(cmd, "--tls-key"), _arg(cmd, "--tls-ca")) == (
        f"{mount}/tls.crt", f"{mount}/tls.key", f"{mount}/ca.crt")
    assert _arg(cmd, "--tls-verify") == "ca" and nodetls.serves_tls(cmd)
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["scheme"] == c["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert "subPath" not in str(c["volumeMounts"])  # the kubelet refreshes the files on renewal


def test_every_other_client_pod_mounts_the_ca_certificate_alone() -> None:
    spec = parse_spec({})
    example = (Path(__file__).resolve().parents[2] / "examples" / "workload-job.yaml").read_text()
    pods = {
        "writer": instance_deployment("demo", "ns", "writer", 1, spec)["spec"]["template"]["spec"],
        "replica": instance_deployment("demo", "ns", "replica", 1, spec)["spec"]["template"]["spec"],
        "chaos job": WorkloadJob("demo", "ns", "img", 10).manifest()["spec"]["template"]["spec"],
        "example job": next(d for d in yaml.safe_load_all(example) if d["kind"] == "Job")["spec"]["template"]["spec"],
    }
    for what, pod in pods.items():
        assert _tls_items(pod) == {"node-ca": ["ca.crt"]}, what
        cmd = pod["containers"][0]["command"]
        assert _arg(cmd, "--node-ca-file") == f"{_mounts(pod)['node-ca']}/ca.crt" == nodetls.ca_path(), what


def test_topologies_and_pod_urls_are_https_but_for_pods_made_before_tls() -> None:
    doc = pl.desired_placement("demo", ["zone-a", "zone-b", "zone-c"], parse_spec({}), None)
    a, b = sorted(pl.pods_of(doc))[:2]
    topo = topology_from_objects(doc, {a: "10.0.0.1", b: "10.0.0.2"}, "ns", "demo", plain=frozenset({b}))
    assert (topo.nodes[a], topo.nodes[b]) == ("https://10.0.0.1:7000", "http://10.0.0.2:7000")
    assert PodObs("p", "a", "10.0.0.1", True).url == "https://10.0.0.1:7000"
    assert PodObs("p", "a", "10.0.0.1", True, tls=False).url == "http://10.0.0.1:7000"
    assert not nodetls.serves_tls(["tidemark", "node", "run", "--auth-key-file", "k"])
    assert nodetls.pod_command({"containers": [{"command": ["a"], "args": ["--tls-cert", "x"]}]}) == [
        "a", "--tls-cert", "x"]


@pytest.fixture
async def node_like(tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, str]]]:
    """An https server on 127.0.0.1 with the cluster's certificate (which names no IP)."""
    data = nodetls.new_entries("demo", "ns")

    async def status(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert.write_bytes(_pem(data, "tls.crt"))
    key.write_bytes(_pem(data, "tls.key"))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    app = web.Application()
    app.router.add_get("/v1/status", status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://127.0.0.1:{port}/v1/status", data
    finally:
        await runner.cleanup()


async def test_verify_ca_accepts_the_clusters_ca_by_ip_and_refuses_another_ca(
        node_like: tuple[str, dict[str, str]], tmp_path: Path) -> None:
    url, data = node_like
    creds = NodeCredentials.from_keys(("k" * 64,))
    ours = client_tls_verify_ca(ca_pem=nodetls.ca_pem(data))
    theirs = client_tls_verify_ca(ca_pem=nodetls.ca_pem(nodetls.new_entries("demo", "ns")))
    client = NodeClient()
    try:
        assert await client.for_cluster(creds, ours).call("GET", url) == {"ok": True}
        with pytest.raises(NodeError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.for_cluster(creds, theirs).call("GET", url)
        with pytest.raises(NodeError, match="CERTIFICATE_VERIFY_FAILED"):  # the system's trust
            await client.for_cluster(creds).call("GET", url)
        with pytest.raises(NodeError):  # verify-full: the certificate names no IP
            ca = tmp_path / "ca.crt"
            ca.write_bytes(_pem(data, "ca.crt"))
            await client.for_cluster(creds, peer_trust(str(ca))).call("GET", url)
        # the node's own peer calls (gossip, hydration, scrub) with --tls-verify ca
        assert await client.for_cluster(creds, peer_trust(str(ca), check_hostname=False)).call("GET", url) == {
            "ok": True}
    finally:
        await client.close()
