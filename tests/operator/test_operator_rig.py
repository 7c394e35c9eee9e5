"""The operator on the rig: real apiserver, kwok nodes, storage-node processes per pod.

The tests share one operator and one AuroraCluster (module scope) and run in file order:
schema refusals, an unsatisfiable spec, a Ready cluster with a verified workload, drift
(a deleted zone StatefulSet) under load, node loss under load, operator restart during a
spec change, and deletion."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from crashing_operator import CRASH_EXIT
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rigenv import (
    NAME,
    TIDEMARK,
    Operator,
    assert_no_write_lost,
    cluster_body,
    cond,
    get_ac,
    kubectl,
    node_headers,
    node_status,
    node_trust,
    operator_env,
    owned,
    ready,
    workload_during,
)

from tidemark_compute.topology import client_tls_verify_ca
from tidemark_operator import nodetls
from tidemark_operator.model import GROUP, PLURAL, VERSION, ZONE_LABEL, ZONE_POD_LABEL
from tidemark_operator.steps import AFTER_REPAIR_BEGIN, AFTER_REPAIR_FINISH
from tidemark_operator.topology import cluster_topology
from tidemark_protocol.node_auth import Role
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.pod_runner import read_state
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator]


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory) as e:
        yield e



# -- tests, in order -------------------------------------------------------------------------

@pytest.mark.parametrize(("spec", "needle"), [
    ({"zones": ["zone-a", "zone-b"]}, "3 items"),
    ({"zones": ["zone-a", "zone-a", "zone-b"]}, "zones must be 3 distinct zone names"),
    ({"nodesPerZone": 1}, "nodesPerZone"),
    ({"segmentsPerZone": 3}, "segmentsPerZone"),
    ({"volume": {"pageSize": 1000}}, "pageSize must be a multiple of 512"),
    ({"backup": {"enabled": True}}, "backup.enabled needs backup.target and backup.credentialsSecret"),
    ({"backup": {"target": "ftp://x", "retentionDays": 40}}, "retentionDays"),
    ({"repair": {"nodeLossTimeout": "five minutes"}}, "nodeLossTimeout"),
    ({"repair": {"rebuildBandwidth": "50MB"}}, "rebuildBandwidth"),
    ({"instances": -1}, "spec.instances: Invalid value: -1: spec.instances in body should be greater than or equal to 0"),
    ({"instances": 2, "instance": {"maxLagMs": 10}}, "maxLagMs"),
])
def test_schema_refuses_invalid_manifests(env: dict[str, Any], spec: dict[str, Any], needle: str) -> None:
    body = cluster_body("bad", **spec)
    with pytest.raises(ApiException) as info:
        env["co"].create_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, body,
                                                  _request_timeout=10)
    assert info.value.status == 422
    assert needle in info.value.body, info.value.body


def test_schema_refuses_shrinking_and_layout_changes(env: dict[str, Any]) -> None:
    body = cluster_body("shrink", nodesPerZone=3, zones=["zone-a", "zone-b", "zone-nowhere"])
    env["co"].create_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, body, _request_timeout=10)
    try:
        for patch, needle in [({"spec": {"nodesPerZone": 2}}, "nodesPerZone cannot shrink"),
                              ({"spec": {"volume": {"pageSize": 8192}}}, "pageSize is immutable")]:
            with pytest.raises(ApiException) as info:
                env["co"].patch_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "shrink",
                                                         patch, _request_timeout=10)
            assert info.value.status == 422 and needle in info.value.body
    finally:
        env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "shrink",
                                                  _request_timeout=10)


def test_unsatisfiable_zone_reports_false_condition_and_builds_nothing(env: dict[str, Any]) -> None:
    body = cluster_body("nowhere", zones=["zone-a", "zone-b", "zone-nowhere"])
    env["co"].create_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, body, _request_timeout=10)
    try:
        obj = wait_for(lambda: (lambda o: o if cond(o, "Ready").get("status") == "False" else None)(
            get_ac(env, "nowhere")), 30, "Ready=False on the unsatisfiable cluster")
        c = cond(obj, "Ready")
        assert c["reason"] == "ZoneUnavailable" and "zone-nowhere" in c["message"]
        time.sleep(2)  # a few more operator passes
        assert owned(env, "nowhere") == {"sts": [], "svc": [], "pdb": [], "cm": [], "netpol": []}
        events = env["core"].list_namespaced_event(
            env["ns"], field_selector="involvedObject.name=nowhere", _request_timeout=5).items
        assert any(ev.reason == "ZoneUnavailable" and ev.type == "Warning" for ev in events)
    finally:
        env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, "nowhere",
                                                  _request_timeout=10)


def test_cluster_becomes_ready_and_a_workload_verifies(env: dict[str, Any]) -> None:
    env["co"].create_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, cluster_body(NAME),
                                              _request_timeout=10)
    wait_for(lambda: ready(env), 90, "AuroraCluster Ready with 4/4 healthy PGs", interval=0.5)
    o = owned(env, NAME)
    assert sorted(o["sts"]) == [f"{NAME}-zone-a", f"{NAME}-zone-b", f"{NAME}-zone-c"]
    assert o["svc"] == [f"{NAME}-nodes"] and o["pdb"] == [f"{NAME}-storage"]
    assert o["cm"] == [f"{NAME}-placement"]
    # made under exactly the chart's RBAC and accepted by the apiserver's validation (no
    # instances here: no NAME-instances); enforcement is tested on kind
    assert o["netpol"] == [f"{NAME}-nodes"]
    zone_of = {n.metadata.name: n.metadata.labels[ZONE_LABEL]
               for n in env["core"].list_node(_request_timeout=5).items}
    pods = env["core"].list_namespaced_pod(env["ns"], label_selector=f"tidemark.dev/cluster={NAME}",
                                           _request_timeout=5).items
    assert len(pods) == 6
    for p in pods:
        assert zone_of[p.spec.node_name] == p.metadata.labels[ZONE_POD_LABEL]

    out = workload_during(env, lambda: time.sleep(2), settle=0.5)
    assert out["acked"] > 50 and out["failed"] == 0
    assert out["result"].ok, out["result"].to_json()

    # status follows: VDL observed from the nodes, printer columns filled
    wait_for(lambda: get_ac(env)["status"].get("vdl", 0) > 0, 15, "VDL in status")
    table = subprocess.run([kubectl(), "--kubeconfig", env["rig"].kubeconfig, "-n", env["ns"],
                            "get", "ac", NAME], capture_output=True, text=True, timeout=20, check=True).stdout
    header, row = table.strip().splitlines()
    assert header.split() == ["NAME", "READY", "NODES", "PGS", "VDL", "INSTANCES", "PRIMARY", "AGE"]
    cols = row.split()
    assert cols[:4] == [NAME, "True", "6/6", "4/4"] and int(cols[4]) > 0
    events = env["core"].list_namespaced_event(
        env["ns"], field_selector=f"involvedObject.name={NAME}", _request_timeout=5).items
    reasons = {ev.reason for ev in events}
    assert {"Created", "PlacementUpdated", "SegmentCreated"} <= reasons

    # the CLI path the examples' Job uses: `tidemark workload --from-cluster`
    res = subprocess.run([TIDEMARK, "workload", "--from-cluster", NAME, "--namespace", env["ns"],
                          "--seconds", "1", "--concurrency", "4", "--verify", "--json"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KUBECONFIG": str(env["rig"].kubeconfig)})
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["verified"] is True and summary["acked"] > 0

    # the operator's liveness endpoint and OpenTelemetry metrics
    op: Operator = env["op"]
    with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{op.metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert "tidemark_operator_reconciles_total" in text
    assert "tidemark_cluster_writable_pgs{" in text and "tidemark_cluster_pg_healthy_segments{" in text
    assert 'what="' not in text  # one gauge per quantity, named by its unit


def test_network_policies_follow_spec_network_policies(env: dict[str, Any]) -> None:
    """`spec.network.policies: false` deletes the operator's NetworkPolicy (and only its
    own: one of that name somebody else made is left alone); true makes it again."""
    net = client.NetworkingV1Api(env["api"])
    ns = env["ns"]

    def policies(on: bool) -> None:
        env["co"].patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME,
                                                 {"spec": {"network": {"policies": on}}}, _request_timeout=10)

    policies(False)
    wait_for(lambda: owned(env, NAME)["netpol"] == [], 30, "the NetworkPolicy deleted", interval=0.5)
    mine = {"metadata": {"name": f"{NAME}-nodes"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    net.create_namespaced_network_policy(ns, mine, _request_timeout=10)  # a user's, same name
    try:
        wait_for(lambda: ready(env), 60, "Ready again after the spec change", interval=0.5)
        time.sleep(3)  # a few more passes
        kept = net.read_namespaced_network_policy(f"{NAME}-nodes", ns, _request_timeout=5)
        assert kept.spec.pod_selector.match_labels is None  # still the user's, untouched
    finally:
        net.delete_namespaced_network_policy(f"{NAME}-nodes", ns, _request_timeout=10)
    policies(True)
    wait_for(lambda: owned(env, NAME)["netpol"] == [f"{NAME}-nodes"], 30, "the NetworkPolicy made again",
             interval=0.5)
    wait_for(lambda: ready(env), 60, "Ready", interval=0.5)


def _call(ip: str, method: str, path: str, headers: dict[str, str] | None = None,
          tls: ssl.SSLContext | None = None) -> int:
    """The HTTP status a storage pod answers METHOD PATH with (over https, trusting TLS)."""
    request = urllib.request.Request(f"https://{ip}:7000{path}", method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5, context=tls) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def test_storage_pods_refuse_calls_without_the_clusters_tokens(env: dict[str, Any],
                                                                tmp_path: Any) -> None:
    """The operator made the cluster's node-auth Secret (owned by it); the storage pods
    run with its key only, so an unauthenticated DELETE of a segment is refused (401) and
    the segment stays; a writer's token may not drop one either (403); the operator keeps
    the cluster Ready with its admin token, and a workload with the writer token alone
    (as a pod mounts it) verifies."""
    ns, core = env["ns"], env["core"]
    secret = core.read_namespaced_secret(f"{NAME}-node-auth", ns, _request_timeout=5)
    assert sorted(secret.data) == ["node-auth.key", "reader.token", "writer.token"]
    assert [(o.kind, o.name) for o in secret.metadata.owner_references] == [("AuroraCluster", NAME)]
    pod = sorted(core.list_namespaced_pod(ns, label_selector=f"tidemark.dev/cluster={NAME}",
                                          _request_timeout=5).items, key=lambda p: p.metadata.name)[0]
    ip, name = pod.status.pod_ip, pod.metadata.name
    # the pod runner wrote the mounted key (and nothing else of the Secret) as a kubelet would
    mounted = env["rig"].dir / "pods" / ns / name / "etc" / "tidemark" / "node-auth"
    # (entries only: `..data` and its timestamped dir are the kubelet's atomic-update layout)
    assert sorted(f.name for f in mounted.iterdir() if not f.name.startswith("..")) == ["node-auth.key"]
    assert mounted.joinpath("node-auth.key").stat().st_mode & 0o777 == 0o400
    pg = next(pg for pg, m in cluster_topology(core, ns, NAME).memberships.items() if name in m.members)

    tls = node_trust(env)
    assert _call(ip, "GET", "/readyz", tls=tls) == 200 and _call(ip, "GET", "/livez", tls=tls) == 200  # the probes
    assert _call(ip, "GET", "/v1/status", tls=tls) == 401
    assert _call(ip, "DELETE", f"/v1/segments/{pg}", tls=tls) == 401
    assert _call(ip, "DELETE", f"/v1/segments/{pg}", node_headers(env, role=Role.WRITER), tls) == 403
    assert _call(ip, "DELETE", f"/v1/segments/{pg}", {"Authorization": "Bearer admin." + "0" * 64}, tls) == 401
    assert pg in {int(s["pg"]) for s in node_status(env, ip)["segments"]}

    time.sleep(4)  # several operator passes, each calling every node with its token
    assert ready(env), get_ac(env).get("status")
    assert pg in {int(s["pg"]) for s in node_status(env, ip)["segments"]}

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    (tokens / "writer.token").write_bytes(base64.b64decode(secret.data["writer.token"]))
    res = subprocess.run([TIDEMARK, "workload", "--from-cluster", NAME, "--namespace", ns, "--seconds", "1",
                          "--concurrency", "4", "--verify", "--json", "--node-tokens-dir", str(tokens)],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KUBECONFIG": str(env["rig"].kubeconfig)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["verified"] is True


def test_storage_pods_speak_tls_only_and_are_verified_against_the_clusters_ca(env: dict[str, Any],
                                                                             tmp_path: Any) -> None:
    """The operator made the cluster's node-tls Secret (owned by it: its CA and the nodes'
    certificate); a storage pod mounts the certificate, its key and ca.crt (never ca.key),
    refuses plain http, fails a client that trusts another CA and serves one that trusts
    the cluster's (by pod IP, which the certificate does not name: verify-ca); a workload
    given the mounted CA file alone, as a pod runs it, verifies."""
    ns, core = env["ns"], env["core"]
    secret = core.read_namespaced_secret(f"{NAME}-node-tls", ns, _request_timeout=5)
    # plain values first: a failed assert must not print the Secret's data
    kind, entries, ca_pem = secret.type, sorted(secret.data), base64.b64decode(secret.data["ca.crt"])
    owners = [(o.kind, o.name) for o in secret.metadata.owner_references]
    del secret
    assert kind == "kubernetes.io/tls" and entries == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert owners == [("AuroraCluster", NAME)]
    pod = sorted(core.list_namespaced_pod(ns, label_selector=f"tidemark.dev/cluster={NAME}",
                                          _request_timeout=5).items, key=lambda p: p.metadata.name)[0]
    ip, name = pod.status.pod_ip, pod.metadata.name
    assert pod.spec.containers[0].readiness_probe.http_get.scheme == "HTTPS"
    mounted = env["rig"].dir / "pods" / ns / name / "etc" / "tidemark" / "node-tls"
    entries = [f for f in mounted.iterdir() if not f.name.startswith("..")]  # not the kubelet's `..data`
    assert sorted(f.name for f in entries) == ["ca.crt", "tls.crt", "tls.key"]
    assert all(f.stat().st_mode & 0o777 == 0o400 for f in entries)

    with pytest.raises((OSError, http.client.HTTPException)):  # plain http: no answer at all
        urllib.request.urlopen(f"http://{ip}:7000/livez", timeout=5)
    other_ca = client_tls_verify_ca(ca_pem=nodetls.ca_pem(nodetls.new_entries(NAME, ns)))
    with pytest.raises(urllib.error.URLError) as refused:
        urllib.request.urlopen(f"https://{ip}:7000/livez", timeout=5, context=other_ca)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)
    assert _call(ip, "GET", "/livez", tls=node_trust(env)) == 200
    assert pg_count(node_status(env, ip)) > 0

    files = tmp_path / "pod"
    files.mkdir()
    (files / "writer.token").write_bytes(base64.b64decode(
        core.read_namespaced_secret(f"{NAME}-node-auth", ns, _request_timeout=5).data["writer.token"]))
    (files / "ca.crt").write_bytes(ca_pem)
    res = subprocess.run([TIDEMARK, "workload", "--from-cluster", NAME, "--namespace", ns, "--seconds", "1",
                          "--concurrency", "4", "--verify", "--json", "--node-tokens-dir", str(files),
                          "--node-ca-file", str(files / "ca.crt")],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KUBECONFIG": str(env["rig"].kubeconfig)})
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1])["verified"] is True


def pg_count(status: dict[str, Any]) -> int:
    return len(status.get("segments", []))


def test_deleted_zone_statefulset_is_recreated_and_writes_never_stop(env: dict[str, Any]) -> None:
    sts = f"{NAME}-zone-a"
    ns, core = env["ns"], env["core"]
    old_uid = env["apps"].read_namespaced_stateful_set(sts, ns, _request_timeout=5).metadata.uid
    old_pods = {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(
        ns, label_selector=f"{ZONE_POD_LABEL}=zone-a", _request_timeout=5).items}
    assert len(old_pods) == 2

    def new_pods_serve_segments() -> bool:
        pods = core.list_namespaced_pod(ns, label_selector=f"{ZONE_POD_LABEL}=zone-a",
                                        _request_timeout=5).items
        fresh = [p for p in pods if p.metadata.uid not in old_pods.values()
                 and p.status.phase == "Running" and p.status.pod_ip]
        if len(fresh) != 2:
            return False
        return all(len(node_status(env, p.status.pod_ip)["segments"]) == 4 for p in fresh)

    def action() -> None:
        env["apps"].delete_namespaced_stateful_set(sts, ns, _request_timeout=10)
        core.delete_namespaced_service(f"{NAME}-nodes", ns, _request_timeout=10)
        wait_for(lambda: env["apps"].read_namespaced_stateful_set(
            sts, ns, _request_timeout=5).metadata.uid != old_uid, 30, "StatefulSet recreated")
        wait_for(lambda: core.read_namespaced_service(f"{NAME}-nodes", ns, _request_timeout=5),
                 30, "Service recreated")
        wait_for(new_pods_serve_segments, 90, "new zone-a pods serving their segments", interval=0.5)
        wait_for(lambda: ready(env), 90, "cluster Ready again", interval=0.5)

    out = workload_during(env, action)
    print("statefulset deletion:", out)
    assert_no_write_lost(out)


def test_node_loss_writes_continue_no_acked_commit_lost(env: dict[str, Any]) -> None:
    rig: ControlPlane = env["rig"]
    pod = env["core"].read_namespaced_pod(f"{NAME}-zone-b-0", env["ns"], _request_timeout=5)
    node = pod.spec.node_name

    def action() -> None:
        rig.delete_node(node)
        time.sleep(4)  # writes keep going on 5/6 (or 4/6) segments meanwhile
        st = get_ac(env)["status"]
        assert st["writablePGs"] == 4

    try:
        out = workload_during(env, action)
    finally:
        rig.restore_nodes()
    print("node loss:", out)
    assert_no_write_lost(out)
    # the pod comes back (rescheduled or its node restored) and the cluster heals
    wait_for(lambda: ready(env), 150, "cluster Ready again after node loss", interval=1)


def test_template_change_rolls_one_zone_at_a_time_and_writes_never_stop(env: dict[str, Any]) -> None:
    ns = env["ns"]
    uids = {p.metadata.name: p.metadata.uid for p in env["core"].list_namespaced_pod(
        ns, label_selector=f"tidemark.dev/cluster={NAME}", _request_timeout=5).items}
    rolling_at_once: list[int] = []

    def zones_rolling() -> int:
        n = 0
        for s in env["apps"].list_namespaced_stateful_set(
                ns, label_selector=f"tidemark.dev/cluster={NAME}", _request_timeout=5).items:
            if s.status.update_revision and s.status.current_revision != s.status.update_revision:
                n += 1
        return n

    def all_pods_replaced() -> bool:
        rolling_at_once.append(zones_rolling())
        pods = env["core"].list_namespaced_pod(ns, label_selector=f"tidemark.dev/cluster={NAME}",
                                               _request_timeout=5).items
        return len(pods) == 6 and all(p.metadata.uid != uids.get(p.metadata.name) for p in pods)

    def action() -> None:
        env["co"].patch_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, NAME,
            {"spec": {"resources": {"requests": {"cpu": "150m", "memory": "256Mi"}}}},
            _request_timeout=10)
        wait_for(all_pods_replaced, 120, "every storage pod restarted with the new template",
                 interval=0.2)
        wait_for(lambda: ready(env), 90, "cluster Ready after the rollout", interval=0.5)

    out = workload_during(env, action)
    print("rolling update:", out, "max zones rolling at once:", max(rolling_at_once))
    assert max(rolling_at_once) <= 1
    assert_no_write_lost(out)
    events = env["core"].list_namespaced_event(
        ns, field_selector=f"involvedObject.name={NAME}", _request_timeout=5).items
    assert sum(1 for ev in events if ev.reason == "Updated" and "StatefulSet" in ev.message) >= 3


def test_operator_killed_mid_change_converges_after_restart(env: dict[str, Any]) -> None:
    op: Operator = env["op"]
    env["co"].patch_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, NAME,
                                             {"spec": {"volume": {"pgCount": 6}, "nodesPerZone": 3}},
                                             _request_timeout=10)
    time.sleep(0.3)  # let it start the change
    op.kill(signal.SIGKILL)
    op.start()
    obj = wait_for(lambda: ready(env, pgs=6), 120, "Ready with 6/6 PGs after restart", interval=0.5)
    assert obj["status"]["readyNodes"] == "9/9"
    o = owned(env, NAME)
    assert len(o["sts"]) == 3
    # the new PGs use the new pods; the old PGs kept their members
    topo = cluster_topology(env["core"], env["ns"], NAME)
    assert len(topo.memberships) == 6
    new_members = set(topo.memberships[4].members) | set(topo.memberships[5].members)
    assert any(m.endswith("-2") for m in new_members)
    out = workload_during(env, lambda: time.sleep(1), settle=0.5)
    assert out["failed"] == 0 and out["result"].ok


def test_lost_pod_segments_are_rebuilt_on_a_spare_pod_while_writes_continue(env: dict[str, Any]) -> None:
    rig: ControlPlane = env["rig"]
    ns, core = env["ns"], env["core"]
    env["co"].patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, NAME,
        {"spec": {"repair": {"nodeLossTimeout": "3s", "maxConcurrentRebuilds": 4}}}, _request_timeout=10)
    pods = core.list_namespaced_pod(ns, label_selector=f"{ZONE_POD_LABEL}=zone-c", _request_timeout=5).items
    by_node: dict[str, list[str]] = {}
    for p in pods:
        by_node.setdefault(p.spec.node_name, []).append(p.metadata.name)
    node, lost = next((n, ps[0]) for n, ps in sorted(by_node.items()) if len(ps) == 1)
    before = cluster_topology(core, ns, NAME)
    affected = sorted(pg for pg, m in before.memberships.items() if lost in m.members)
    assert affected

    def repaired() -> bool:
        if node in rig.ready_nodes():
            # kwok can race the rig's NotReady patch with a heartbeat; keep the node dead
            rig.mark_node_not_ready(node)
        topo = cluster_topology(core, ns, NAME)
        return all(m.next_members is None and lost not in m.members for m in topo.memberships.values())

    def action() -> None:
        rig.mark_node_not_ready(node)
        wait_for(repaired, 120, f"segments of {lost} rebuilt elsewhere", interval=0.5)
        wait_for(lambda: ready(env, pgs=6), 60, "Ready with 6/6 PGs healthy after the repair", interval=0.5)

    try:
        out = workload_during(env, action)
    finally:
        rig.restore_nodes()
    print("repair:", out)
    assert_no_write_lost(out)
    after = cluster_topology(core, ns, NAME)
    for pg in affected:
        m = after.memberships[pg]
        assert m.epoch == before.memberships[pg].epoch + 2
        assert sum(1 for x in m.members if "-zone-c-" in x) == 2
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={NAME}",
                                        _request_timeout=5).items
    reasons = {ev.reason for ev in events}
    assert {"RepairStarted", "Hydrating", "RepairFinished"} <= reasons

    # the lost pod comes back with stale copies: they are dropped
    def stale_copies_dropped() -> bool:
        p = core.read_namespaced_pod(lost, ns, _request_timeout=5)
        held = {int(x["pg"]) for x in node_status(env, p.status.pod_ip)["segments"]}
        return not held & set(affected)

    wait_for(stale_copies_dropped, 90, f"{lost} back without its moved segments", interval=1)
    # and a fresh writer (recovery from the new memberships) sees every page
    out = workload_during(env, lambda: time.sleep(1), settle=0.5)
    assert out["failed"] == 0 and out["result"].ok


RUNNING = ("snapshot", "log", "catching_up")


def _node_statuses(env: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Each storage pod's /v1/status (None: not running or not answering)."""
    out: dict[str, dict[str, Any] | None] = {}
    for p in env["core"].list_namespaced_pod(env["ns"], label_selector=f"tidemark.dev/cluster={NAME}",
                                             _request_timeout=5).items:
        out[p.metadata.name] = None
        if p.status.pod_ip and p.metadata.deletion_timestamp is None:
            try:
                out[p.metadata.name] = node_status(env, p.status.pod_ip)
            except OSError:
                pass
    return out


def _segment(st: dict[str, Any] | None, pg: int) -> dict[str, Any] | None:
    return next((s for s in (st or {}).get("segments", []) if int(s["pg"]) == pg), None)


def _start_operator(op: Operator, crash_at: str | None = None) -> None:
    """(Re)start the operator, optionally one that dies at a step of the repair path
    (tests/operator/crashing_operator.py, a step observer of tidemark_operator.steps)."""
    op.kill(signal.SIGKILL)
    op.start(crash_at)


def test_operator_killed_mid_repair_resumes_and_finishes_it(env: dict[str, Any]) -> None:
    """The operator dies at three points of a rebuild (right after the placement write
    that begins a repair, right after the one that finishes it, and while a target
    hydrates); each time a new process picks the repairs up from the placement and the
    nodes' status and finishes them exactly as a clean run would."""
    rig: ControlPlane = env["rig"]
    op: Operator = env["op"]
    ns, core = env["ns"], env["core"]
    # One rebuild at a time, throttled so a hydration is seen running.
    env["co"].patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, NAME,
        {"spec": {"repair": {"nodeLossTimeout": "3s", "maxConcurrentRebuilds": 1,
                             "rebuildBandwidth": "64Ki"}}}, _request_timeout=10)
    wait_for(lambda: ready(env, pgs=6), 60, "Ready with the new repair settings", interval=0.5)
    pods = core.list_namespaced_pod(ns, label_selector=f"{ZONE_POD_LABEL}=zone-a", _request_timeout=5).items
    by_node: dict[str, list[str]] = {}
    for p in pods:
        by_node.setdefault(p.spec.node_name, []).append(p.metadata.name)
    node, lost = next((n, ps[0]) for n, ps in sorted(by_node.items()) if len(ps) == 1)
    before = cluster_topology(core, ns, NAME)
    affected = sorted(pg for pg, m in before.memberships.items() if lost in m.members)
    assert len(affected) >= 2, affected
    seen: dict[str, Any] = {}

    def keep_dead() -> None:
        if node in rig.ready_nodes():
            rig.mark_node_not_ready(node)  # kwok can race the NotReady patch with a heartbeat

    def crashed() -> bool:
        keep_dead()
        return op.proc is not None and op.proc.poll() is not None

    def hydrating() -> tuple[int, str, dict[str, Any]] | None:
        keep_dead()
        topo = cluster_topology(core, ns, NAME)
        statuses = _node_statuses(env)
        for pg, m in topo.memberships.items():
            for new in set(m.next_members or ()) - set(m.members):
                seg = _segment(statuses.get(new), pg)
                h = (seg or {}).get("hydration") or {}
                if h.get("state") in RUNNING:
                    return pg, new, h
        return None

    def repaired() -> bool:
        keep_dead()
        topo = cluster_topology(core, ns, NAME)
        return all(m.next_members is None and lost not in m.members for m in topo.memberships.values())

    def action() -> None:
        # 1. dies right after writing the dual membership, before telling any node
        _start_operator(op, AFTER_REPAIR_BEGIN)
        rig.mark_node_not_ready(node)
        wait_for(crashed, 90, "the operator to die after beginning a repair", interval=0.2)
        assert op.proc is not None and op.proc.returncode == CRASH_EXIT
        topo = cluster_topology(core, ns, NAME)
        dual = [pg for pg, m in topo.memberships.items() if m.next_members is not None]
        assert len(dual) == 1 and dual[0] in affected, topo.memberships
        p1 = dual[0]
        m1 = topo.memberships[p1]
        assert m1.epoch == before.memberships[p1].epoch + 1
        (target1,) = set(m1.next_members or ()) - set(m1.members)
        assert _segment(_node_statuses(env).get(target1), p1) is None, "the crash came too late"
        seen["begin"] = (p1, target1)

        # 2. a new process resumes it and dies right after writing the final membership
        _start_operator(op, AFTER_REPAIR_FINISH)
        wait_for(crashed, 120, "the operator to die after finishing a repair", interval=0.2)
        assert op.proc is not None and op.proc.returncode == CRASH_EXIT
        m1 = cluster_topology(core, ns, NAME).memberships[p1]
        assert m1.next_members is None and target1 in m1.members and lost not in m1.members
        assert m1.epoch == before.memberships[p1].epoch + 2

        # 3. killed (SIGKILL) while a target hydrates, and the target's storage process
        #    dies with it (a container restart, same data): its rebuild comes back
        #    "failed" and the next operator starts it again on the same segment
        _start_operator(op)
        pg, target, h = wait_for(hydrating, 120, "a target hydrating", interval=0.1)
        op.kill(signal.SIGKILL)
        pid = read_state(rig.dir)[core.read_namespaced_pod(target, ns, _request_timeout=5).metadata.uid]["pid"]
        os.killpg(pid, signal.SIGKILL)

        def target_back() -> str | None:
            keep_dead()
            seg = _segment(_node_statuses(env).get(target), pg)
            return ((seg or {}).get("hydration") or {}).get("state")

        state = wait_for(target_back, 60, f"{target} restarted", interval=0.2)
        seen["hydrating"] = (pg, target, h["state"], state)
        assert state == "failed", seen  # "interrupted by a node restart: hydrate again"
        _start_operator(op)
        wait_for(repaired, 240, f"segments of {lost} rebuilt elsewhere", interval=0.5)
        wait_for(lambda: ready(env, pgs=6), 90, "Ready with 6/6 PGs healthy after the repair", interval=0.5)

    try:
        out = workload_during(env, action)
    finally:
        rig.restore_nodes()
        if op.proc is None or op.proc.poll() is not None:
            _start_operator(op)  # the rest of the module needs an operator
    print("repair with operator restarts:", out, seen)
    assert_no_write_lost(out, max_gap=10.0)

    # membership epochs advanced exactly as a clean run: one dual step, one final step
    after = cluster_topology(core, ns, NAME)
    for pg, m in after.memberships.items():
        assert m.next_members is None, (pg, m)
        if pg in affected:
            assert m.epoch == before.memberships[pg].epoch + 2, (pg, m)
            assert lost not in m.members and sum(1 for x in m.members if "-zone-a-" in x) == 2
        else:
            assert m == before.memberships[pg], (pg, m)

    # the events show the steps the new processes resumed
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={NAME}",
                                        _request_timeout=5).items

    def pgs_of(reason: str, needle: str = "") -> set[int]:
        return {int(ev.message.split()[1].rstrip(":")) for ev in events
                if ev.reason == reason and needle in ev.message}

    p1, target1 = seen["begin"]
    p_hyd = seen["hydrating"][0]
    assert {p1, p_hyd} <= pgs_of("RepairResumed"), [(e.reason, e.message) for e in events]
    assert p1 in pgs_of("Hydrating", target1)
    # the rebuild cut short by the target's restart was started again
    t_hyd = seen["hydrating"][1]
    assert sum(1 for ev in events if ev.reason == "Hydrating"
               and ev.message.startswith(f"pg {p_hyd}: {t_hyd} ")) >= 2, seen
    # p1's RepairFinished event died with the second process; every other one was said
    assert set(affected) - {p1} <= pgs_of("RepairFinished", "replaced " + lost)

    # the lost pod comes back; afterwards every pod holds exactly the segments the
    # placement gives it: no stale copy, no abandoned target, no half-hydrated segment
    def settled() -> bool:
        statuses = _node_statuses(env)
        if any(st is None for st in statuses.values()) or len(statuses) != 9:
            return False
        held = {(pod, int(s["pg"])) for pod, st in statuses.items() for s in st["segments"]}
        placed = {(x, pg) for pg, m in cluster_topology(core, ns, NAME).memberships.items() for x in m.members}
        states = {(s.get("hydration") or {}).get("state") for st in statuses.values() for s in st["segments"]}
        return held == placed and states <= {"idle", "done"}

    wait_for(settled, 120, f"{lost} back and every pod holding exactly its placed segments", interval=1)
    out = workload_during(env, lambda: time.sleep(1), settle=0.5)
    assert out["failed"] == 0 and out["result"].ok


def test_deleting_the_cluster_removes_everything_it_owns_and_retains_the_volume(env: dict[str, Any]) -> None:
    """deletionPolicy Retain (the default here): the PVCs and the placement that says
    which segment each holds stay; everything else goes."""
    env["co"].delete_namespaced_custom_object(GROUP, VERSION, env["ns"], PLURAL, NAME, _request_timeout=10)

    def gone() -> bool:
        try:
            get_ac(env)
            return False
        except ApiException as exc:
            return exc.status == 404

    wait_for(gone, 30, "AuroraCluster deleted")
    empty = {"sts": [], "svc": [], "pdb": [], "cm": [f"{NAME}-placement"], "netpol": []}
    wait_for(lambda: owned(env, NAME) == empty, 60, "owned objects garbage-collected", interval=0.5)
    placement = env["core"].read_namespaced_config_map(f"{NAME}-placement", env["ns"], _request_timeout=5)
    assert not placement.metadata.owner_references  # kept with the PVCs
    wait_for(lambda: not env["core"].list_namespaced_pod(
        env["ns"], label_selector=f"tidemark.dev/cluster={NAME}", _request_timeout=5).items,
        60, "storage pods gone")
    wait_for(lambda: not env["core"].list_namespaced_secret(
        env["ns"], field_selector=f"metadata.name={NAME}-node-auth", _request_timeout=5).items,
        60, "the node-auth Secret garbage-collected")

