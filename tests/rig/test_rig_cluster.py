"""The rig's control plane: zone-labelled kwok nodes, scheduling, the pod runner, node loss."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
import urllib.request
from typing import Any

import pytest
from kubernetes import client

from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.fixtures import kubectl_path
from tidemark_rig.kwok_nodes import ZONE_LABEL
from tidemark_rig.pod_runner import RUN_LOCAL_LABEL, read_state
from tidemark_rig.procs import pid_alive, wait_for

pytestmark = pytest.mark.rig

ZONES = ["zone-a", "zone-b", "zone-c"]
PORT = 8080

# A tiny HTTP server that binds the pod IP and answers with the env the pod runner gave it.
SERVER = textwrap.dedent(
    """
    import http.server, json, os
    keys = ["POD_NAME", "POD_NAMESPACE", "POD_IP", "NODE_NAME", "TIDEMARK_ZONE", "GREETING"]
    body = json.dumps({k: os.environ.get(k) for k in keys}).encode()
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.end_headers(); self.wfile.write(body)
        def log_message(self, *a):
            pass
    http.server.HTTPServer((os.environ["POD_IP"], int(os.environ["PORT"])), H).serve_forever()
    """
)


kubectl = kubectl_path


def test_kubectl_sees_zone_labelled_ready_nodes(rig_kubeconfig: str) -> None:
    out = subprocess.run(
        [kubectl(), "--kubeconfig", rig_kubeconfig, "get", "nodes", "-o", "json"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout
    nodes = json.loads(out)["items"]
    by_zone: dict[str, list[str]] = {}
    for n in nodes:
        ready = [c["status"] for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == ["True"], n["metadata"]["name"]
        assert n["spec"]["podCIDR"].startswith("127.")
        by_zone.setdefault(n["metadata"]["labels"][ZONE_LABEL], []).append(n["metadata"]["name"])
    assert sorted(by_zone) == ZONES
    assert all(len(v) == 2 for v in by_zone.values())


def statefulset(name: str, zone: str) -> dict[str, Any]:
    labels = {"app": name, RUN_LOCAL_LABEL: "true"}
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "PORT", "value": str(PORT)},
        {"name": "GREETING", "value": "hello from $(POD_NAME)"},
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [
                            {"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}]}}},
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main", "image": "tidemark:rig",
                        "command": [sys.executable, "-c", SERVER], "env": env,
                    }],
                },
            },
        },
    }


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


def running_pod(core: Any, ns: str, name: str, not_uid: str | None = None) -> Any:
    try:
        pod = core.read_namespaced_pod(name, ns, _request_timeout=5)
    except client.exceptions.ApiException:
        return None
    ok = (pod.status.phase == "Running" and pod.status.pod_ip and not pod.metadata.deletion_timestamp
          and pod.metadata.uid != not_uid)
    return pod if ok else None


def test_statefulsets_per_zone_run_local_processes_and_survive_node_loss(
    rig_cluster: ControlPlane, rig_namespace: str
) -> None:
    ns = rig_namespace
    core = rig_cluster.core()
    apps = client.AppsV1Api(rig_cluster.api_client())
    zone_of = {n.metadata.name: n.metadata.labels[ZONE_LABEL]
               for n in core.list_node(_request_timeout=5).items}
    for zone in ZONES:
        apps.create_namespaced_stateful_set(ns, statefulset(f"web-{zone}", zone), _request_timeout=10)

    pods = {}
    for zone in ZONES:
        pod = wait_for(lambda zone=zone: running_pod(core, ns, f"web-{zone}-0"), 60,
                       f"pod web-{zone}-0 Running")
        assert zone_of[pod.spec.node_name] == zone
        assert pod.status.pod_ip.startswith("127.")
        pods[zone] = pod
    # The pod runner's process answers at the pod IP with the pod's downward-API env.
    for zone, pod in pods.items():
        body = wait_for(lambda pod=pod: get_json(f"http://{pod.status.pod_ip}:{PORT}/"), 30,
                        f"HTTP from {pod.metadata.name} at {pod.status.pod_ip}")
        assert body == {
            "POD_NAME": pod.metadata.name, "POD_NAMESPACE": ns, "POD_IP": pod.status.pod_ip,
            "NODE_NAME": pod.spec.node_name, "TIDEMARK_ZONE": zone,
            "GREETING": f"hello from {pod.metadata.name}",
        }

    def runner_pid(uid: str) -> int | None:
        rec = read_state(rig_cluster.dir).get(uid)
        return rec["pid"] if rec else None

    try:
        # Node marked NotReady: its process is killed; the node lifecycle controller taints it.
        b = pods["zone-b"]
        b_pid = runner_pid(b.metadata.uid)
        assert b_pid and pid_alive(b_pid)
        rig_cluster.mark_node_not_ready(b.spec.node_name)
        wait_for(lambda: not pid_alive(b_pid), 15, "zone-b process killed after NotReady")

        def tainted() -> bool:
            taints = core.read_node(b.spec.node_name, _request_timeout=5).spec.taints or []
            return any(t.key == "node.kubernetes.io/unreachable" for t in taints)

        wait_for(tainted, 60, "controller-manager to taint the NotReady node unreachable")

        # Node deleted: its process is killed at once; the pod GC removes the orphaned pod and
        # the StatefulSet controller recreates it on the zone's other node.
        a = pods["zone-a"]
        a_pid = runner_pid(a.metadata.uid)
        assert a_pid and pid_alive(a_pid)
        t0 = time.monotonic()
        rig_cluster.delete_node(a.spec.node_name)
        wait_for(lambda: not pid_alive(a_pid), 15, "zone-a process killed after node deletion")
        new = wait_for(lambda: running_pod(core, ns, "web-zone-a-0", not_uid=a.metadata.uid), 150,
                       "web-zone-a-0 recreated and Running on another node", interval=1)
        assert new.spec.node_name != a.spec.node_name
        assert zone_of[new.spec.node_name] == "zone-a"
        body = wait_for(lambda: get_json(f"http://{new.status.pod_ip}:{PORT}/"), 30,
                        "HTTP from the rescheduled pod")
        assert body["NODE_NAME"] == new.spec.node_name and body["TIDEMARK_ZONE"] == "zone-a"
        print(f"zone-a pod rescheduled {time.monotonic() - t0:.0f}s after its node was deleted")

        # The zone-c pod was never disturbed; deleting it kills its process at once.
        c = pods["zone-c"]
        assert get_json(f"http://{c.status.pod_ip}:{PORT}/")["POD_NAME"] == "web-zone-c-0"
        c_pid = runner_pid(c.metadata.uid)
        assert c_pid and pid_alive(c_pid)
        core.delete_namespaced_pod("web-zone-c-0", ns, _request_timeout=10)
        wait_for(lambda: not pid_alive(c_pid), 15, "zone-c process killed after pod deletion")
    finally:
        for zone in ZONES:
            apps.delete_namespaced_stateful_set(f"web-{zone}", ns, _request_timeout=10)
        rig_cluster.restore_nodes()


CRD = textwrap.dedent(
    """
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata:
      name: widgets.rig.tidemark.dev
    spec:
      group: rig.tidemark.dev
      scope: Namespaced
      names: {plural: widgets, singular: widget, kind: Widget}
      versions:
      - name: v1
        served: true
        storage: true
        subresources: {status: {}}
        schema:
          openAPIV3Schema:
            type: object
            properties:
              spec:
                type: object
                properties:
                  size: {type: integer}
              status:
                type: object
                properties:
                  phase: {type: string}
                  observedGeneration: {type: integer}
    """
)


def test_crd_with_status_subresource(rig_cluster: ControlPlane, rig_kubeconfig: str,
                                     rig_namespace: str, tmp_path: Any) -> None:
    crd_file = tmp_path / "crd.yaml"
    crd_file.write_text(CRD)
    subprocess.run([kubectl(), "--kubeconfig", rig_kubeconfig, "apply", "-f", str(crd_file)],
                   check=True, timeout=30, capture_output=True)
    ext = client.ApiextensionsV1Api(rig_cluster.api_client())

    def established() -> bool:
        crd = ext.read_custom_resource_definition("widgets.rig.tidemark.dev", _request_timeout=5)
        return any(c.type == "Established" and c.status == "True" for c in crd.status.conditions or [])

    wait_for(established, 30, "CRD Established")
    co = client.CustomObjectsApi(rig_cluster.api_client())
    args = ("rig.tidemark.dev", "v1", rig_namespace, "widgets")
    try:
        # Discovery of a new CRD lags its Established condition by a moment.
        wait_for(lambda: co.create_namespaced_custom_object(
            *args, {"apiVersion": "rig.tidemark.dev/v1", "kind": "Widget",
                    "metadata": {"name": "w1"}, "spec": {"size": 3}}, _request_timeout=5),
            30, "create Widget w1")
        items = co.list_namespaced_custom_object(*args, _request_timeout=5)["items"]
        assert [i["metadata"]["name"] for i in items] == ["w1"]

        # Status goes through the subresource; a spec change bumps generation, status doesn't.
        co.patch_namespaced_custom_object_status(
            *args, "w1", {"status": {"phase": "Ready", "observedGeneration": 1}}, _request_timeout=5)
        co.patch_namespaced_custom_object(*args, "w1", {"spec": {"size": 5}}, _request_timeout=5)
        w = co.get_namespaced_custom_object(*args, "w1", _request_timeout=5)
        assert w["spec"]["size"] == 5
        assert w["status"] == {"phase": "Ready", "observedGeneration": 1}
        assert w["metadata"]["generation"] == 2
        # A status written through the main resource is ignored when the subresource exists.
        co.patch_namespaced_custom_object(*args, "w1", {"status": {"phase": "Bogus"}},
                                          _request_timeout=5)
        w = co.get_namespaced_custom_object(*args, "w1", _request_timeout=5)
        assert w["status"]["phase"] == "Ready"
    finally:
        ext.delete_custom_resource_definition("widgets.rig.tidemark.dev", _request_timeout=10)
