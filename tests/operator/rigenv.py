"""Shared pieces of the operator tests on the rig: the operator process, a namespace with
the CRDs and a running operator, AuroraCluster helpers and a verifying workload."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import chart_identity
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_operator.model import GROUP, NODE_PORT, PLURAL, VERSION
from tidemark_operator.topology import cluster_credentials, cluster_topology, cluster_trust
from tidemark_protocol.node_auth import Role, headers_for
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.fixtures import kubectl_path
from tidemark_rig.procs import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRD = ROOT / "crds" / "auroraclusters.tidemark.dev.yaml"
NAME = "demo"
TIDEMARK = str(Path(sys.executable).with_name("tidemark"))
CRASHING_OPERATOR = Path(__file__).with_name("crashing_operator.py")


kubectl = kubectl_path


def assert_no_write_lost(out: dict[str, Any], max_gap: float = 5.0) -> None:
    """What `workload_during` saw: no failed commit, every acknowledged one read back,
    commits during the action and no commit gap of `max_gap` seconds or more."""
    assert out["failed"] == 0 and out["result"].ok, out["result"].to_json()
    assert out["during"] > 0 and out["max_gap"] < max_gap, out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Operator:
    def __init__(self, kubeconfig: str, ns: str, log: Path) -> None:
        self.kubeconfig, self.ns, self.log = kubeconfig, ns, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.health_port, self.metrics_port = free_port(), free_port()

    def start(self, crash_at: str | None = None) -> None:
        """Start `tidemark operator run`; with CRASH_AT, through the test-only launcher
        that makes the process die at that step (crashing_operator.py)."""
        args = ["run", "-n", self.ns, "--kubeconfig", self.kubeconfig, "--node-command", TIDEMARK,
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
                "--metrics-port", str(self.metrics_port), "--interval", "1"]
        cmd = ([sys.executable, str(CRASHING_OPERATOR), crash_at, *args] if crash_at
               else [TIDEMARK, "operator", *args])
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


def install_crd(api: client.ApiClient, path: Path) -> None:
    """Create or replace one CRD and wait until it is established."""
    ext = client.ApiextensionsV1Api(api)
    crd = yaml.safe_load(path.read_text())
    try:
        ext.create_custom_resource_definition(crd, _request_timeout=10)
    except ApiException as exc:
        if exc.status != 409:
            raise
        cur = ext.read_custom_resource_definition(crd["metadata"]["name"], _request_timeout=10)
        crd["metadata"]["resourceVersion"] = cur.metadata.resource_version
        ext.replace_custom_resource_definition(crd["metadata"]["name"], crd, _request_timeout=10)

    def established() -> bool:
        c = ext.read_custom_resource_definition(crd["metadata"]["name"], _request_timeout=5)
        return any(x.type == "Established" and x.status == "True" for x in c.status.conditions or [])

    wait_for(established, 30, f"CRD {crd['metadata']['name']} established")


@contextlib.contextmanager
def operator_env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory,
                 crds: tuple[Path, ...] = (CRD,),
                 rbac_edit: Callable[[list[dict[str, Any]]], None] = lambda docs: None) -> Iterator[dict[str, Any]]:
    """A fresh namespace with the CRDs installed and one operator process watching it, as
    the chart's ServiceAccount with exactly the chart's RBAC (`chart_identity`; RBAC_EDIT
    may change the rendered objects first)."""
    api = rig_cluster.api_client()
    for path in crds:
        install_crd(api, path)
    ns = "op-" + uuid.uuid4().hex[:6]
    core = rig_cluster.core()
    core.create_namespace({"metadata": {"name": ns}}, _request_timeout=10)
    work = tmp_path_factory.mktemp("operator")
    ident = chart_identity.install(rig_cluster, work, ns, rbac_edit)
    log = work / "operator.log"
    op = Operator(str(ident.kubeconfig), ns, log)
    op.start()
    e = {"rig": rig_cluster, "api": api, "core": core, "apps": client.AppsV1Api(api),
         "co": client.CustomObjectsApi(api), "policy": client.PolicyV1Api(api), "ns": ns,
         "op": op, "log": log, "identity": ident}
    try:
        yield e
    finally:
        op.kill(signal.SIGTERM)
        with contextlib.suppress(Exception):
            rig_cluster.restore_nodes()
        with contextlib.suppress(Exception):
            core.delete_namespace(ns, _request_timeout=10)
        chart_identity.remove(rig_cluster, ident)


def cluster_body(name: str, **spec: Any) -> dict[str, Any]:
    body = yaml.safe_load((ROOT / "examples" / "cluster.yaml").read_text())
    body["metadata"] = {"name": name}
    body["spec"]["storage"]["ephemeral"] = True  # the rig has no volume provisioner
    # storage only unless a test asks for database instances (raw-page workloads open
    # writers of their own, which would fence an instance's writer)
    body["spec"]["instances"] = 0
    # The rig has two kwok nodes per zone; the example's third pod per zone is kind's spare.
    body["spec"]["nodesPerZone"] = 2
    body["spec"].update(spec)
    return body


def get_ac(e: dict[str, Any], name: str = NAME) -> dict[str, Any]:
    return e["co"].get_namespaced_custom_object(GROUP, VERSION, e["ns"], PLURAL, name,
                                                _request_timeout=5)


def node_headers(e: dict[str, Any], name: str = NAME, role: Role = Role.ADMIN) -> dict[str, str]:
    """ROLE's token for the cluster's storage nodes (from its node-auth Secret)."""
    return headers_for(cluster_credentials(e["core"], e["ns"], name), role)


def node_trust(e: dict[str, Any], name: str = NAME) -> ssl.SSLContext:
    """Trust for the cluster's storage nodes: its own CA (verify-ca), from its node-tls Secret."""
    tls = cluster_trust(e["core"], e["ns"], name)
    assert tls is not None, f"no {name}-node-tls Secret"
    return tls


def node_status(e: dict[str, Any], ip: str, name: str = NAME, timeout: float = 2.0) -> dict[str, Any]:
    """A storage pod's /v1/status over https, asked with the cluster's admin token."""
    request = urllib.request.Request(f"https://{ip}:{NODE_PORT}/v1/status", headers=node_headers(e, name))
    with urllib.request.urlopen(request, timeout=timeout, context=node_trust(e, name)) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), {})


def ready(e: dict[str, Any], name: str = NAME, pgs: int = 4) -> dict[str, Any] | None:
    obj = get_ac(e, name)
    st = obj.get("status") or {}
    ok = (cond(obj, "Ready").get("status") == "True" and cond(obj, "Degraded").get("status") == "False"
          and st.get("healthyPGs") == f"{pgs}/{pgs}"
          and st.get("observedGeneration") == obj["metadata"]["generation"])
    return obj if ok else None


def owned(e: dict[str, Any], name: str) -> dict[str, list[str]]:
    sel = f"tidemark.dev/cluster={name}"
    ns = e["ns"]
    return {
        "sts": [s.metadata.name for s in e["apps"].list_namespaced_stateful_set(
            ns, label_selector=sel, _request_timeout=5).items],
        "svc": [s.metadata.name for s in e["core"].list_namespaced_service(
            ns, label_selector=sel, _request_timeout=5).items],
        "pdb": [s.metadata.name for s in e["policy"].list_namespaced_pod_disruption_budget(
            ns, label_selector=sel, _request_timeout=5).items],
        "cm": [s.metadata.name for s in e["core"].list_namespaced_config_map(
            ns, label_selector=sel, _request_timeout=5).items],
        "netpol": [s.metadata.name for s in client.NetworkingV1Api(e["api"]).list_namespaced_network_policy(
            ns, label_selector=sel, _request_timeout=5).items],
    }


async def _workload_during(e: dict[str, Any], action: Callable[[], None], settle: float = 2.0,
                           concurrency: int = 8) -> dict[str, Any]:
    topo = cluster_topology(e["core"], e["ns"], NAME)

    async def source() -> Any:
        return await asyncio.to_thread(cluster_topology, e["core"], e["ns"], NAME)

    writer = await Writer.open(topo, membership_source=source, timeout=60)
    model = Model(None)
    stop = asyncio.Event()
    commits: list[float] = []
    try:
        task = asyncio.create_task(run_workload(writer, model, 600, concurrency=concurrency,
                                                stop=stop, on_commit=lambda _l: commits.append(time.monotonic())))
        await asyncio.sleep(settle)
        t0 = time.monotonic()
        await asyncio.to_thread(action)
        t1 = time.monotonic()
        await asyncio.sleep(settle)
        stop.set()
        stats = await task
        result = await verify(writer, model)
    finally:
        model.close()
        await writer.close()
    during = [t for t in commits if t0 <= t <= t1]
    gaps = [b - a for a, b in zip(commits, commits[1:], strict=False)]
    return {"acked": stats.acked, "failed": stats.failed, "result": result,
            "during": len(during), "max_gap": max(gaps, default=0.0), "action_s": t1 - t0}


def workload_during(e: dict[str, Any], action: Callable[[], None], **kw: Any) -> dict[str, Any]:
    return asyncio.run(_workload_during(e, action, **kw))


SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # PostgreSQL's SSLRequest


def served(ip: str, port: int, trust: ssl.SSLContext, postgres: bool = False) -> bytes:
    """The certificate (DER) a server presents to a new handshake, verified against TRUST
    (the cluster's CA, verify-ca); POSTGRES: after PostgreSQL's SSLRequest."""
    with socket.create_connection((ip, port), timeout=5) as raw:
        if postgres:
            raw.sendall(SSL_REQUEST)
            assert raw.recv(1) == b"S", "the instance does not offer TLS"
        with trust.wrap_socket(raw) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der
    return der
