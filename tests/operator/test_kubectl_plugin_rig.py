"""`kubectl tidemark` on the rig (real apiserver, the operator, a storage-node process per
pod): status of a healthy and of a degraded cluster, the snapshot and backup commands,
the support report, and maintenance mode holding back a rebuild that otherwise happens.

One operator and one AuroraCluster for the module (9 storage pods: a spare per zone, so
a lost pod's segments can move); the tests run in file order and the maintenance test,
which stops a storage process, comes last."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from rigenv import CRD, NAME, ROOT, cluster_body, cond, get_ac, kubectl, operator_env, ready

from tidemark_operator.model import GROUP, PLURAL, VERSION, ZONE_LABEL
from tidemark_operator.topology import cluster_topology
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.pod_runner import read_state
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator]

PLUGIN = str(Path(sys.executable).with_name("kubectl-tidemark"))
SNAP_CRD = ROOT / "crds" / "aurorasnapshots.tidemark.dev.yaml"
SECRET_VALUE = "plugin-s3cr3t-value"


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory, crds=(CRD, SNAP_CRD)) as e:
        body = cluster_body(NAME, nodesPerZone=3,
                            repair={"nodeLossTimeout": "2s", "maxConcurrentRebuilds": 4})
        e["co"].create_namespaced_custom_object(GROUP, VERSION, e["ns"], PLURAL, body, _request_timeout=10)
        wait_for(lambda: ready(e), 120, "AuroraCluster Ready with 4/4 healthy PGs", interval=0.5)
        yield e


def plugin(env: dict[str, Any], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    assert Path(PLUGIN).exists(), f"{PLUGIN} not installed (the console script of `pip install -e .`)"
    return subprocess.run([PLUGIN, *args, "--kubeconfig", str(env["rig"].kubeconfig), "-n", env["ns"]],
                          capture_output=True, text=True, timeout=timeout)


def plugin_json(env: dict[str, Any], *args: str, code: int = 0, timeout: float = 90) -> Any:
    res = plugin(env, *args, "--json", timeout=timeout)
    assert res.returncode == code, (res.returncode, res.stdout[-2000:], res.stderr[-2000:])
    return json.loads(res.stdout)


def test_status_of_a_healthy_cluster(env: dict[str, Any]) -> None:
    s = plugin_json(env, "status", NAME)
    assert s["healthy"] is True and s["problems"] == [] and s["phase"] == "Ready"
    assert (s["ready_nodes"], s["healthy_pgs"], s["writable_pgs"]) == ("9/9", "4/4", 4)
    assert [p["healthy_segments"] for p in s["pgs"]] == [6, 6, 6, 6]
    assert s["maintenance"] is False and s["repairs"] == []
    zone_of = {n.metadata.name: n.metadata.labels[ZONE_LABEL]
               for n in env["core"].list_node(_request_timeout=5).items}
    nodes = s["storage_nodes"]
    assert len(nodes) == 9 and all(n["answering"] for n in nodes)
    for n in nodes:
        assert zone_of[n["node"]] == n["zone"], n
    placed = cluster_topology(env["core"], env["ns"], NAME).memberships
    assert sum(len(n["pgs"]) for n in nodes) == sum(len(m.members) for m in placed.values()) == 24
    types = {c["type"]: c["status"] for c in s["conditions"]}
    assert types["Ready"] == "True" and types["Degraded"] == "False" and types["Maintenance"] == "False"
    assert {"Created", "SegmentCreated"} <= {e["reason"] for e in plugin_json(env, "status", NAME, "--events", "500")["events"]}

    # as kubectl runs it: the plugin found on PATH, the tables for people
    path = f"{Path(PLUGIN).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    res = subprocess.run([kubectl(), "tidemark", "status", NAME, "--kubeconfig", str(env["rig"].kubeconfig),
                          "-n", env["ns"]], capture_output=True, text=True, timeout=60, env={**os.environ, "PATH": path})
    assert res.returncode == 0, res.stderr[-2000:]
    for needle in (f"AuroraCluster {env['ns']}/{NAME}", "Storage nodes", "Protection groups", "6/6",
                   "Repairs  none in flight", "Backup  not enabled", "Recent events"):
        assert needle in res.stdout, (needle, res.stdout)


def test_backup_and_snapshot_commands_drive_the_operators_objects(env: dict[str, Any]) -> None:
    res = plugin(env, "backup", "status", NAME)
    assert res.returncode == 1 and "no spec.backup enabled" in res.stderr
    # the operator refuses a snapshot of a cluster without backup: the plugin says why
    res = plugin(env, "snapshot", "create", NAME, "--name", "s1", "--timeout", "60", "--json")
    assert res.returncode == 1, res.stderr
    assert "BackupNotEnabled" in json.loads(res.stdout)["error"]
    (row,) = plugin_json(env, "snapshot", "list", NAME)
    assert (row["name"], row["cluster"], row["phase"], row["reason"]) == ("s1", NAME, "Failed", "BackupNotEnabled")
    res = plugin(env, "snapshot", "delete", NAME, "nope")
    assert res.returncode == 1 and "no AuroraSnapshot nope" in res.stderr
    assert plugin_json(env, "snapshot", "delete", NAME, "s1", "--timeout", "60") == {"deleted": "s1"}
    assert plugin_json(env, "snapshot", "list", NAME) == []
    # a restore needs backups of the source: refused before anything is created
    res = plugin(env, "restore", NAME, f"{NAME}-copy", "--json")
    assert res.returncode == 1 and "nothing to restore from" in json.loads(res.stdout)["error"], res.stderr
    res = plugin(env, "restore", "nope", "copy")
    assert res.returncode == 1 and "AuroraCluster nope not found" in res.stderr
    assert [c["metadata"]["name"] for c in env["co"].list_namespaced_custom_object(
        GROUP, VERSION, env["ns"], PLURAL, _request_timeout=5)["items"]] == [NAME]


def test_report_bundle_holds_the_cluster_and_never_secret_data(env: dict[str, Any], tmp_path: Path) -> None:
    env["core"].create_namespaced_secret(env["ns"], {
        "metadata": {"name": f"{NAME}-extra", "labels": {"tidemark.dev/cluster": NAME}},
        "stringData": {"password": SECRET_VALUE}}, _request_timeout=10)
    out = tmp_path / "bundle.tar.gz"
    res = plugin(env, "report", NAME, "-o", str(out), "--node-timeout", "2", "--tail", "50", "--json")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "collecting" in res.stderr  # progress on stderr
    doc = json.loads(res.stdout)
    assert doc["output"] == str(out) and doc["unreachable_nodes"] == []
    with tarfile.open(out, "r:gz") as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    pods = sorted(p.metadata.name for p in env["core"].list_namespaced_pod(
        env["ns"], label_selector=f"tidemark.dev/cluster={NAME}", _request_timeout=5).items)
    expected = {"manifest.json", "cluster.yaml", "events.yaml", "objects/statefulsets.yaml",
                "objects/deployments.yaml", "objects/services.yaml", "objects/pvcs.yaml",
                "objects/configmaps.yaml", "objects/pods.yaml", "objects/secrets.txt",
                "objects/aurorasnapshots.yaml", *(f"nodes/{p}.json" for p in pods)}
    assert expected <= set(files), sorted(expected - set(files))
    ac = yaml.safe_load(files["cluster.yaml"])
    assert ac["spec"]["nodesPerZone"] == 3 and ac["status"]["healthyPGs"] == "4/4"
    assert len(yaml.safe_load(files["objects/statefulsets.yaml"])) == 3
    assert f"{NAME}-placement" in {c["metadata"]["name"] for c in yaml.safe_load(files["objects/configmaps.yaml"])}
    assert files["objects/secrets.txt"].decode().split() == [f"{NAME}-extra", f"{NAME}-node-auth", f"{NAME}-node-tls"]
    assert json.loads(files[f"nodes/{pods[0]}.json"])["node"] == pods[0]
    assert any(e["reason"] == "Created" for e in yaml.safe_load(files["events.yaml"]))
    manifest = json.loads(files["manifest.json"])
    assert manifest["cluster"] == NAME and set(manifest["files"]) == set(files) - {"manifest.json"}
    # the rig runs the operator outside the cluster and kwok serves no pod logs: noted, not fatal
    assert any(m["what"] == "logs/operator" for m in manifest["missing"])
    encoded = base64.b64encode(SECRET_VALUE.encode())
    node_auth = env["core"].read_namespaced_secret(f"{NAME}-node-auth", env["ns"], _request_timeout=5).data
    node_secrets = [base64.b64decode(v).strip() for v in node_auth.values()]  # the key and its tokens
    node_tls = env["core"].read_namespaced_secret(f"{NAME}-node-tls", env["ns"], _request_timeout=5).data
    node_secrets += [base64.b64decode(node_tls[k]).split(b"\n")[1] for k in ("ca.key", "tls.key")]  # PEM lines
    for name, data in files.items():
        assert SECRET_VALUE.encode() not in data and encoded not in data, name
        assert not any(s in data for s in node_secrets), name


def _pgid(env: dict[str, Any], pod: str) -> int:
    uid = env["core"].read_namespaced_pod(pod, env["ns"], _request_timeout=5).metadata.uid
    return int(read_state(env["rig"].dir)[uid]["pid"])


def _events(env: dict[str, Any]) -> list[Any]:
    return env["core"].list_namespaced_event(env["ns"], field_selector=f"involvedObject.name={NAME}",
                                             _request_timeout=5).items


def _repairs_started(env: dict[str, Any]) -> set[tuple[str, int]]:
    return {(e.metadata.name, e.count or 1) for e in _events(env) if e.reason == "RepairStarted"}


def test_maintenance_holds_a_rebuild_back_and_off_lets_it_run(env: dict[str, Any]) -> None:
    """A storage process stopped (SIGSTOP: the pod looks fine, its node answers nothing)
    for longer than nodeLossTimeout is rebuilt elsewhere, unless maintenance is on."""
    core, ns = env["core"], env["ns"]
    on = plugin_json(env, "maintenance", "on", NAME, "--timeout", "30")
    assert on == {"cluster": NAME, "namespace": ns, "maintenance": True, "acknowledged": True}
    assert cond(get_ac(env), "Maintenance")["status"] == "True"
    assert "MaintenanceOn" in {e.reason for e in _events(env)}
    before = cluster_topology(core, ns, NAME).memberships
    lost = sorted(m for ms in before.values() for m in ms.members)[0]
    affected = sorted(pg for pg, m in before.items() if lost in m.members)
    pgid = _pgid(env, lost)
    # a repair an earlier moment of the module started (a node slow under load for more
    # than the 2 s nodeLossTimeout) is not one that maintenance let through
    started_before = _repairs_started(env)
    os.killpg(pgid, signal.SIGSTOP)
    try:
        # degraded: the status shows it (exit 1), which pod, and 5/6 on its PGs
        def degraded() -> dict[str, Any] | None:
            res = plugin(env, "status", NAME, "--json")
            s = json.loads(res.stdout)
            return s if res.returncode == 1 and s["phase"] == "Degraded" else None

        s = wait_for(degraded, 30, "status to show the cluster degraded", interval=0.5)
        assert s["maintenance"] is True and any(p.startswith("Degraded") for p in s["problems"])
        assert [n["name"] for n in s["storage_nodes"] if not n["answering"]] == [lost]
        assert {p["id"]: p["healthy_segments"] for p in s["pgs"] if p["id"] in affected} == {pg: 5 for pg in affected}
        text = plugin(env, "status", NAME).stdout
        assert "MAINTENANCE" in text and "5/6" in text

        # well past nodeLossTimeout (2 s) and many passes (1 s): no rebuild starts
        time.sleep(8)
        held = cluster_topology(core, ns, NAME).memberships
        assert held == before, "a rebuild started under maintenance"
        assert _repairs_started(env) == started_before, "a RepairStarted event under maintenance"
        assert "maintenance" in cond(get_ac(env), "Progressing").get("message", "")

        off = plugin_json(env, "maintenance", "off", NAME, "--timeout", "30")
        assert off["maintenance"] is False and off["acknowledged"] is True

        def repaired() -> bool:
            topo = cluster_topology(core, ns, NAME).memberships
            return all(m.next_members is None and lost not in m.members for m in topo.values())

        wait_for(repaired, 90, f"segments of {lost} rebuilt elsewhere after maintenance off", interval=0.5)
        reasons = {e.reason for e in _events(env)}
        assert {"MaintenanceOff", "RepairStarted", "RepairFinished"} <= reasons
    finally:
        os.killpg(pgid, signal.SIGCONT)
    wait_for(lambda: ready(env), 90, "Ready again with the pod back", interval=0.5)
    assert plugin_json(env, "status", NAME)["healthy"] is True
