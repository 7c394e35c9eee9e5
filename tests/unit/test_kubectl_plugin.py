"""`kubectl tidemark`: the status summary and its rendering, the snapshot and backup
documents, the report's tarball, the command surface (help, --json, one-line errors)."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner
from rich.console import Console

from tidemark_cli import cluster_backup as cb
from tidemark_cli import cluster_restore as cr
from tidemark_cli import support_report
from tidemark_cli.cluster_view import summarize
from tidemark_cli.kubectl_plugin import plugin
from tidemark_cli.status_render import render_status
from tidemark_cli.support_report import Bundle
from tidemark_operator import placement as pl
from tidemark_operator.spec import parse_spec
from tidemark_protocol.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.unit

ZONES = ["zone-a", "zone-b", "zone-c"]


def _doc() -> dict[str, Any]:
    return pl.desired_placement("demo", ZONES, parse_spec({"nodesPerZone": 2}), None)


def _pod(name: str, zone: str, running: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"tidemark.dev/zone": zone}},
            "spec": {"nodeName": f"kwok-{zone}-0"},
            "status": {"phase": "Running" if running else "Pending", "podIP": "127.0.167.9",
                       "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
                       "containerStatuses": [{"restartCount": 2}]}}


def _cond(type_: str, status: bool, reason: str = "R", message: str = "m") -> dict[str, Any]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": "2026-12-01T19:00:00Z"}


def _ac(**status: Any) -> dict[str, Any]:
    base = {"phase": "Ready", "zones": ZONES, "readyNodes": "6/6", "healthyPGs": "4/4", "writablePGs": 4,
            "segments": {str(pg): 6 for pg in range(4)}, "vdl": 1234,
            "conditions": [_cond("Ready", True, "QuorumAvailable"), _cond("Progressing", False, "Reconciled"),
                           _cond("Degraded", False, "AllSegmentsHealthy"), _cond("Maintenance", False, "MaintenanceOff")],
            "readyInstances": "2/2", "currentPrimary": "demo-writer-1",
            "instances": [{"name": "demo-writer-1", "role": "writer", "serving": True, "volumeEpoch": 3, "node": "n1"},
                          {"name": "demo-replica-1", "role": "replica", "serving": True, "lagMs": 4, "node": "n2"}]}
    base.update(status)
    return {"metadata": {"name": "demo", "namespace": "ns"}, "spec": {}, "status": base}


def _pods(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [_pod(p, z) for z, ps in sorted(doc["zones"].items()) for p in ps]


EVENTS = [{"type": "Normal", "reason": "Created", "object": "AuroraCluster/demo", "message": "created  x",
           "count": 1, "last_seen": "2026-12-01T19:00:00Z"},
          {"type": "Warning", "reason": "RepairStarted", "object": "AuroraCluster/demo",
           "message": "pg 0: replacing", "count": 2, "last_seen": "2026-12-01T19:01:00Z"}]


def _text(summary: dict[str, Any]) -> str:
    console = Console(file=io.StringIO(), width=200, record=True, color_system=None)
    render_status(console, summary)
    return console.export_text()


def test_a_healthy_cluster_summarized_and_rendered() -> None:
    doc = _doc()
    s = summarize(_ac(), _pods(doc), doc, EVENTS)
    assert s["healthy"] is True and s["problems"] == [] and s["phase"] == "Ready"
    assert (s["ready_nodes"], s["healthy_pgs"], s["writable_pgs"], s["vdl"]) == ("6/6", "4/4", 4, 1234)
    nodes = {n["name"]: n for n in s["storage_nodes"]}
    assert len(nodes) == 6 and all(n["answering"] and n["ready"] and n["restarts"] == 2 for n in nodes.values())
    # each pod's PGs are the placement's
    for pg, m in pl.memberships(doc).items():
        assert all(pg in nodes[x]["pgs"] for x in m.members)
    assert [p["healthy_segments"] for p in s["pgs"]] == [6, 6, 6, 6]
    assert s["current_primary"] == "demo-writer-1" and s["instances"][1]["lag_ms"] == 4
    assert s["events"][0]["message"] == "created x" and s["maintenance"] is False
    assert s["backup"] is None and s["backup_healthy"] is None
    json.dumps(s)  # the --json document
    text = _text(s)
    for needle in ("AuroraCluster ns/demo", "healthy", "Conditions", "QuorumAvailable", "Storage nodes",
                   "demo-zone-a-0", "kwok-zone-a-0", "Protection groups", "6/6", "Repairs  none in flight",
                   "Backup  not enabled", "demo-writer-1", "writer (primary)", "4 ms", "RepairStarted"):
        assert needle in text, needle
    assert "not healthy" not in text


def test_a_degraded_cluster_in_maintenance_with_a_repair_in_flight() -> None:
    doc = _doc()
    down = doc["zones"]["zone-b"][0]
    st = _ac(phase="Degraded", readyNodes="5/6", healthyPGs="2/4", nodesDown=[down],
             segments={"0": 5, "1": 6, "2": 5, "3": 6},
             repairs=[{"pg": 0, "from": down, "to": "demo-zone-b-2", "state": "snapshot", "pct": 42.0,
                       "bytes": 84, "totalBytes": 200}],
             conditions=[_cond("Ready", True, "QuorumAvailable"),
                         _cond("Progressing", True, "Repairing", "pg 0: demo-zone-b-2 replacing " + down),
                         _cond("Degraded", True, "SegmentsMissing", "2 PG(s) below 6 healthy segments"),
                         _cond("Maintenance", True, "MaintenanceOn")])
    st["status"]["instances"][1]["serving"] = False
    s = summarize(st, _pods(doc), doc, [])
    assert s["healthy"] is False and s["maintenance"] is True
    assert any("Degraded" in p for p in s["problems"]) and any("demo-replica-1" in p for p in s["problems"])
    assert [n["name"] for n in s["storage_nodes"] if not n["answering"]] == [down]
    assert s["repairs"] == [{"pg": 0, "from": down, "to": "demo-zone-b-2", "state": "snapshot", "pct": 42.0,
                             "bytes": 84, "total_bytes": 200}]
    assert s["repairing"].startswith("pg 0")
    text = _text(s)
    for needle in ("not healthy", "MAINTENANCE", "5/6", "42% (84/200 bytes)", "SegmentsMissing",
                   f"{down}", "demo-zone-b-2"):
        assert needle in text, needle


def test_a_cluster_with_no_status_yet() -> None:
    s = summarize({"metadata": {"name": "new", "namespace": "ns"}}, [], None, [])
    assert s["healthy"] is False and s["phase"] == "Unknown" and s["pgs"] == []
    assert "not Ready: no status yet" in s["problems"][0]
    _text(s)  # renders without a placement, pods or status


def test_backup_status_document() -> None:
    with pytest.raises(UserError, match="no spec.backup enabled"):
        cb.backup_status(_ac())
    ac = _ac(backup={"target": "s3://b/p", "lastSuccessfulUpload": "2026-12-01T19:00:00Z", "retentionDays": 7})
    ac["spec"]["backup"] = {"enabled": True}
    ac["status"]["conditions"].append(_cond("BackupHealthy", True, "UploadsCurrent", "newest upload at …"))
    doc = cb.backup_status(ac)
    assert doc["healthy"] is True and doc["reason"] == "UploadsCurrent" and doc["cluster"] == "demo"
    assert doc["target"] == "s3://b/p" and doc["lastSuccessfulUpload"] and doc["retentionDays"] == 7
    s = summarize(ac, [], None, [])
    assert s["backup_healthy"] is True and "window" in _text(s)


def test_snapshot_objects() -> None:
    body = cb.snapshot_body("demo", "before-upgrade", "2026-12-01T19:00:00Z")
    assert body["kind"] == "AuroraSnapshot" and body["apiVersion"] == "tidemark.dev/v1alpha1"
    assert body["spec"] == {"cluster": "demo", "pointInTime": "2026-12-01T19:00:00Z"}
    assert "pointInTime" not in cb.snapshot_body("demo", "x", None)["spec"]
    assert cb.default_snapshot_name("demo", 0) == "demo-19700101-000000"
    row = cb.snapshot_row({**body, "status": {"phase": "Ready", "lsn": 7, "pages": 3, "sizeBytes": 10,
                                             "snapshotTime": "T", "snapshotName": "ns-before-upgrade-1234abcd"}})
    assert (row["name"], row["phase"], row["lsn"], row["size_bytes"], row["snapshot_time"]) == (
        "before-upgrade", "Ready", 7, 10, "T")
    assert cb.snapshot_row({"metadata": {"name": "x"}})["phase"] == "Pending"


def test_wait_until_gives_up_with_one_line() -> None:
    with pytest.raises(UserError, match="timed out after 0 s waiting for nothing"):
        cb.wait_until(lambda: None, 0.01, "nothing", interval=0.01)
    assert cb.wait_until(lambda: 5, 1, "five") == 5


def test_report_tarball_opens_with_its_manifest() -> None:
    b = Bundle("tidemark-report-demo-T")
    b.add("cluster.yaml", "a: 1\n")
    b.add_yaml("objects/pods.yaml", [{"metadata": {"name": "p"}}])
    b.miss("nodes/p.json", "unreachable:   timed out")
    data = b.tarball({"files": sorted(b.files), "missing": b.missing})
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        assert sorted(names) == ["tidemark-report-demo-T/cluster.yaml", "tidemark-report-demo-T/manifest.json",
                                 "tidemark-report-demo-T/objects/pods.yaml"]
        manifest = json.load(tar.extractfile("tidemark-report-demo-T/manifest.json"))  # type: ignore[arg-type]
        pods = yaml.safe_load(tar.extractfile("tidemark-report-demo-T/objects/pods.yaml"))  # type: ignore[arg-type]
    assert manifest["missing"] == [{"what": "nodes/p.json", "why": "unreachable: timed out"}]
    assert pods == [{"metadata": {"name": "p"}}]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    out = []
    for name, cmd in group.commands.items():
        if isinstance(cmd, click.Group):
            out += _commands(cmd, (*prefix, name))
        else:
            out.append(((*prefix, name), cmd))
    return out


def test_every_command_has_help_json_and_kubectl_options() -> None:
    cmds = _commands(plugin)
    assert {" ".join(p) for p, _ in cmds} == {
        "status", "report", "backup status", "snapshot create", "snapshot list", "snapshot delete",
        "maintenance on", "maintenance off", "switchover", "promote", "restore", "chaos"}
    for path, cmd in cmds:
        assert cmd.help, path
        opts = {o for p in cmd.params for o in getattr(p, "opts", [])}
        assert {"--json", "--namespace", "-n", "--kubeconfig", "--context"} <= opts, path
        assert all(p.help for p in cmd.params if isinstance(p, click.Option)), path


def _kubeconfig(tmp_path: Path, server: str = "http://127.0.167.1:9", name: str = "kubeconfig") -> Path:
    """A kubeconfig naming SERVER (default: an API server nobody listens on, 127.0.167.0/24: ours)."""
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "k", "cluster": {"server": server}}],
           "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u", "namespace": "from-context"}}],
           "users": [{"name": "u", "user": {"token": "t"}}]}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("args", [["status", "demo"], ["maintenance", "on", "demo"], ["snapshot", "list", "demo"],
                                  ["backup", "status", "demo"], ["report", "demo"], ["switchover", "demo"]])
def test_an_unreachable_cluster_is_one_line_and_a_json_error(tmp_path: Path, args: list[str]) -> None:
    res = CliRunner().invoke(plugin, [*args, "--kubeconfig", str(_kubeconfig(tmp_path)), "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout.strip().splitlines()[0])
    assert set(doc) == {"error"} and "127.0.167.1" in doc["error"]
    err = [line for line in res.stderr.strip().splitlines() if not line.startswith("collecting ")]
    assert len(err) == 1 and err[0].startswith("Error: cannot reach the API server http://127.0.167.1:9: "
                                               "[Errno 111] Connection refused"), res.stderr


def test_a_missing_context_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(plugin, ["status", "demo", "--kubeconfig", str(_kubeconfig(tmp_path)),
                                      "--context", "nope"], catch_exceptions=False)
    assert res.exit_code == 1 and res.stderr.startswith("Error: ") and "nope" in res.stderr


def test_namespace_comes_from_the_flag_else_the_context(tmp_path: Path) -> None:
    from tidemark_cli.kube_target import connect

    path = str(_kubeconfig(tmp_path))
    assert connect(path, None, None).namespace == "from-context"
    assert connect(path, "c", "mine").namespace == "mine"


def _entry_points() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def test_the_committed_krew_manifest_names_the_plugins_entry_point() -> None:
    text = (ROOT / "plugins" / "krew" / "tidemark.yaml").read_text()
    manifest = yaml.safe_load(text)
    assert manifest["kind"] == "Plugin" and manifest["metadata"]["name"] == "tidemark"
    assert "scripts/krew-manifest.py" in text.split("apiVersion:")[0]  # the comment says how it is made
    module, function = _entry_points()["kubectl-tidemark"].split(":")
    assert callable(getattr(importlib.import_module(module), function)) and function == "main"
    assert module == "tidemark_cli.kubectl_plugin"
    for p in manifest["spec"]["platforms"]:
        assert p["bin"] == "kubectl-tidemark" and p["files"] == [{"from": "kubectl-tidemark", "to": "."}]
        assert len(p["sha256"]) == 64 and set(p["sha256"]) <= set("0123456789abcdef") and p["sha256"] != "0" * 64


def test_the_krew_script_writes_the_sha256_of_the_archive_it_built(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "krew-manifest.py"),
                           "--url-base", "https://example.invalid/r/", "--out-dir", str(tmp_path / "out"),
                           "--manifest", str(tmp_path / "tidemark.yaml")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    (archive,) = (tmp_path / "out").iterdir()
    manifest = yaml.safe_load((tmp_path / "tidemark.yaml").read_text())
    (platform,) = manifest["spec"]["platforms"]
    assert platform["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert platform["uri"] == f"https://example.invalid/r/{archive.name}"
    assert manifest["spec"]["version"] == "v" + tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with tarfile.open(archive) as tar:  # what `files` and `bin` say: one executable at the root
        (member,) = tar.getmembers()
        assert member.name == platform["bin"] and member.mode == 0o755
        executable = tar.extractfile(member).read()  # type: ignore[union-attr]
    assert executable.startswith(b"#!/usr/bin/env python3\n")
    with zipfile.ZipFile(io.BytesIO(executable)) as zapp:
        assert zapp.read("__main__.py").decode().startswith("from tidemark_cli.kubectl_plugin import main")
        assert "tidemark_cli/kubectl_plugin.py" in zapp.namelist()
    # the same tree, the same bytes (so the committed sha256 can be checked by rebuilding)
    again = subprocess.run([sys.executable, str(ROOT / "scripts" / "krew-manifest.py"), "--url-base", "x",
                            "--out-dir", str(tmp_path / "again"), "--manifest", str(tmp_path / "again.yaml")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and (tmp_path / "again" / archive.name).read_bytes() == archive.read_bytes()


def test_the_report_lists_the_secrets_the_spec_names() -> None:
    from tidemark_cli.support_report import referenced_secrets

    ac = {"spec": {"backup": {"credentialsSecret": "b"}, "instance": {"credentialsSecret": "i"},
                   "restore": {"source": {"credentialsSecret": "r"}}}}
    assert referenced_secrets(ac) == {"b", "i", "r"}
    assert referenced_secrets({"spec": {}}) == set()


def test_a_restore_is_a_new_cluster_of_the_sources_shape_with_backups_of_its_own() -> None:
    (source,) = [d for d in yaml.safe_load_all((ROOT / "examples" / "backup-cluster.yaml").read_text())
                 if d and d.get("kind") == "AuroraCluster"]
    source["metadata"].setdefault("namespace", "default")
    body = cr.restore_body(source, "db-at-noon", "2026-12-01T12:00:00Z")
    spec, src = body["spec"], source["spec"]
    assert body["kind"] == "AuroraCluster" and body["metadata"] == {"name": "db-at-noon"}
    assert spec["restore"] == {"source": {"cluster": source["metadata"]["name"]},
                               "pointInTime": "2026-12-01T12:00:00Z"}
    assert {k: spec.get(k) for k in ("volume", "nodesPerZone", "storage")} == \
        {k: src.get(k) for k in ("volume", "nodesPerZone", "storage")}
    assert spec["backup"]["target"] == cr.sibling_prefix(src["backup"]["target"], "db-at-noon") != \
        src["backup"]["target"]
    assert spec["backup"]["credentialsSecret"] == src["backup"]["credentialsSecret"]
    assert "backup" not in cr.restore_body(source, "n2", None, backup=False)["spec"]
    assert "pointInTime" not in cr.restore_body(source, "n3", None)["spec"]["restore"]
    assert cr.sibling_prefix("s3://b/a/db", "x") == "s3://b/a/x" and cr.sibling_prefix("s3://b", "x") == "s3://b/x"
    with pytest.raises(UserError, match="NEW cluster"):
        cr.restore_body(source, source["metadata"]["name"], None)
    no_backup = {**source, "spec": {**src, "backup": {"enabled": False}}}
    with pytest.raises(UserError, match="nothing to restore from"):
        cr.restore_body(no_backup, "n4", None)


# -- kubectl tidemark chaos: the refusals that need no cluster (the runs are tests/kind's) --
def test_chaos_help_names_every_experiment_and_option() -> None:
    res = CliRunner().invoke(plugin, ["chaos", "--help"], catch_exceptions=False)
    assert res.exit_code == 0
    for needle in ("kill-node", "kill-zone", "restart-operator", "--seconds", "--plot", "--json", "--kubeconfig"):
        assert needle in res.output, needle


def test_chaos_refuses_an_unknown_experiment_in_one_line_before_any_connection() -> None:
    res = CliRunner().invoke(plugin, ["chaos", "demo", "kill-everything"])
    errors = [line for line in res.stderr.splitlines() if line.startswith("Error:")]
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output  # a usage error, as click's
    assert len(errors) == 1 and "kill-everything" in errors[0] and "restart-operator" in errors[0], res.stderr


def _closed_port() -> int:
    with socket.socket() as s:  # bound, never listened on: connections are refused
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def no_clusters() -> Iterator[tuple[str, list[str]]]:
    """An API server on 127.0.0.1 that knows no AuroraCluster: 404 for everything; the paths asked."""
    asked: list[str] = []

    class NotFound(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            asked.append(f"GET {self.path}")
            body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound",
                               "code": 404, "message": 'auroraclusters.tidemark.dev "demo" not found'}).encode()
            self.send_response(404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_DELETE = do_PATCH = do_GET  # noqa: N815 (recorded, refused likewise)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()


def _kubectl_tidemark(tmp_path: Path, default_kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The plugin as kubectl runs it, in a process of its own: the kubernetes client reads
    $KUBECONFIG when it is imported, and chaos goes by that default configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}  # never in-cluster
    env.update(KUBECONFIG=str(default_kubeconfig), HOME=str(tmp_path))
    return subprocess.run([sys.executable, "-m", "tidemark_cli.kubectl_plugin", "chaos", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def test_chaos_on_a_missing_cluster_is_one_line_and_makes_nothing(
        tmp_path: Path, no_clusters: tuple[str, list[str]]) -> None:
    server, asked = no_clusters
    done = _kubectl_tidemark(tmp_path, _kubeconfig(tmp_path, server), "demo", "kill-node", "--json")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    message = "AuroraCluster demo not found in namespace from-context"
    assert done.stderr.strip().splitlines() == [f"Error: {message}"]
    assert json.loads(done.stdout) == {"error": message}
    assert asked == ["GET /apis/tidemark.dev/v1alpha1/namespaces/from-context/auroraclusters/demo"]


def test_chaos_with_an_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    port = _closed_port()
    done = _kubectl_tidemark(tmp_path, _kubeconfig(tmp_path, f"http://127.0.0.1:{port}"), "demo", "kill-zone")
    assert done.returncode == 1 and done.stdout == "", done.stdout
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"Error: cannot reach the API server http://127.0.0.1:{port}: "), line


def test_chaos_refuses_a_kubeconfig_other_than_the_one_its_faults_go_by(
        tmp_path: Path, no_clusters: tuple[str, list[str]]) -> None:
    server, asked = no_clusters
    other = _kubeconfig(tmp_path, f"http://127.0.0.1:{_closed_port()}", name="other")
    done = _kubectl_tidemark(tmp_path, _kubeconfig(tmp_path, server), "demo", "restart-operator",
                             "--kubeconfig", str(other))
    assert done.returncode == 1 and asked == [], done.stderr  # refused before any request
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("Error: chaos runs against the default kubeconfig's current context") and server in line


def test_the_report_dials_a_pod_ip_only_where_it_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    # From a laptop a kind pod IP is not routed (a SYN would take the default route off the
    # machine): the report uses a port-forward there, the pod IP on the rig and in-cluster.
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    assert support_report.routable_here("127.69.1.3")
    assert not support_report.routable_here("10.244.3.7")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    assert support_report.routable_here("10.244.3.7")


def test_a_pass_refused_for_a_missing_rbac_verb_is_a_problem() -> None:
    doc = _doc()
    refused = ('poddisruptionbudgets.policy is forbidden: User "system:serviceaccount:ns:tm" cannot create '
               'resource "poddisruptionbudgets": grant it')
    st = _ac(conditions=[_cond("Ready", True, "QuorumAvailable"), _cond("Reconciled", False, "PermissionDenied", refused)])
    s = summarize(st, _pods(doc), doc, [])
    assert s["healthy"] is False
    assert any(p.startswith("operator pass refused: PermissionDenied: poddisruptionbudgets") for p in s["problems"])
    assert "PermissionDenied" in _text(s)
