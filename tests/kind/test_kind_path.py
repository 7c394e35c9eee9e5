"""The user's path on a real kind cluster: the commands of docs/kind.md, then node, operator
and zone faults under the verifying workload Job; then the database: MinIO in the cluster,
psql through `kubectl port-forward` to db-rw and db-ro, a point-in-time restore into a
new cluster holding exactly the rows committed before T, and the writer's worker killed
(writes resume through db-rw).

One module (one cluster): a module-scoped fixture deletes the ten nodes as soon as the
kind tests are done, so they do not load the machine under the rest of the suite."""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from kindenv import ROOT, Kind, psql, segments_full, wait_for

from tidemark_rig.kind import egress, engine

# The first test also makes the cluster (cold: the node programs build, ~25 min).
pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

OPERATOR = "app.kubernetes.io/component=operator"
DB, RESTORED = "db", "db-restored"


@pytest.fixture(scope="module")
def demo(kind_cluster: Kind) -> Kind:
    """docs/kind.md step 4: `kubectl apply -f examples/cluster.yaml`, wait for Ready."""
    k = kind_cluster
    k.kubectl("apply", "-f", "examples/cluster.yaml")
    k.kubectl("wait", "ac/demo", "--for=condition=Ready", "--timeout=5m", timeout=330)
    wait_for(lambda: segments_full(k.ac()), 300, "every PG at 6 healthy segments")
    return k


def test_the_egress_guard_is_in_place_while_a_cluster_exists(kind_cluster: Kind) -> None:
    nodes = kind_cluster.docker("ps", "--filter", f"label=io.x-k8s.kind.cluster={kind_cluster.name}",
                                "--format", "{{.Names}}").split()
    assert len(nodes) == 10, nodes
    assert egress.guard_problems() == []
    if engine.we_started_it():  # its containers' DNS goes to an address the chain rejects
        pid = int(engine.PIDFILE.read_text())
        assert ["--dns", egress.DNS_SINK] in _pairs(psutil.Process(pid).cmdline())
    # CoreDNS must not forward names outside the cluster to the node's resolver.
    corefile = kind_cluster.json("-n", "kube-system", "get", "configmap", "coredns")["data"]["Corefile"]
    assert "forward" not in corefile


def _pairs(argv: list[str]) -> list[list[str]]:
    return [argv[i:i + 2] for i in range(len(argv) - 1)]


def test_cluster_yaml_is_ready_with_pods_in_their_zones_and_pvcs_bound(demo: Kind) -> None:
    zone_of_node = {n: z for z, nodes in demo.workers_by_zone().items() for n in nodes}
    pods = demo.pods("tidemark.dev/cluster=demo")
    assert len(pods) == 9
    for pod in pods:
        assert zone_of_node[pod["spec"]["nodeName"]] == pod["metadata"]["labels"]["tidemark.dev/zone"]
        # Pod Security "restricted": RuntimeDefault seccomp, no service-account token.
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["automountServiceAccountToken"] is False
        # https only, probed over https by the kubelet (the pods are Ready: it works)
        node = pod["spec"]["containers"][0]
        assert node["readinessProbe"]["httpGet"]["scheme"] == node["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
        assert node["command"][node["command"].index("--tls-verify") + 1] == "ca"
    secret = demo.json("get", "secret", "demo-node-tls")
    kind, entries = secret["type"], sorted(secret["data"])  # never the data in an assert message
    del secret
    assert kind == "kubernetes.io/tls" and entries == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    # One storage pod per worker: each zone's third worker is the spare for a rebuild.
    assert len({p["spec"]["nodeName"] for p in pods}) == 9
    pvcs = demo.json("get", "pvc", "-l", "tidemark.dev/cluster=demo")["items"]
    assert len(pvcs) == 9 and all(p["status"]["phase"] == "Bound" for p in pvcs)
    # The operator's NetworkPolicy for the storage port is in place (not enforced on this
    # machine's kind: its kernel has no nft queue expression for kube-network-policies), and
    # the chaos Jobs and the hand path's Job carry the label it admits.
    policy = demo.json("get", "networkpolicy", "demo-nodes")
    assert policy["spec"]["policyTypes"] == ["Ingress"], policy["spec"]
    # The operator passed its own image: the spec names none.
    assert "image" not in demo.ac()["spec"]
    operator_image = demo.pods(OPERATOR, "tidemark-system")[0]["spec"]["containers"][0]["image"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {operator_image}


def test_kubectl_tidemark_status_and_report_on_a_real_cluster(demo: Kind, tmp_path: Path) -> None:
    """The plugin as a user runs it from the host: status, and a support bundle with the
    operator's and every storage pod's log and each node's /v1/status (pod IPs do not
    route from the host: through a port-forward, with the reader token)."""
    plugin = [sys.executable, "-m", "tidemark_cli.kubectl_plugin"]
    done = subprocess.run([*plugin, "status", "demo", "--json"], capture_output=True, text=True, timeout=120,
                          env=demo.env(), cwd=ROOT)
    assert done.returncode == 0 and json.loads(done.stdout)["healthy"] is True, done.stdout[-2000:] + done.stderr[-2000:]
    out = tmp_path / "bundle.tar.gz"
    done = subprocess.run([*plugin, "report", "demo", "-o", str(out), "--tail", "200", "--json"],
                          capture_output=True, text=True, timeout=300, env=demo.env(), cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["unreachable_nodes"] == [], doc
    with tarfile.open(out, "r:gz") as tar:
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    pods = sorted(p["metadata"]["name"] for p in demo.pods("tidemark.dev/cluster=demo"))
    for pod in pods:
        assert json.loads(files[f"nodes/{pod}.json"])["node"] == pod
        assert files[f"logs/storage/{pod}.log"], pod
    operator_logs = [name for name in files if name.startswith("logs/operator/")]
    assert operator_logs and all(files[n] for n in operator_logs), sorted(files)


def _since(events: list[dict[str, Any]], t0: dt.datetime) -> list[dict[str, Any]]:
    def stamp(e: dict[str, Any]) -> dt.datetime:
        return dt.datetime.fromisoformat((e.get("lastTimestamp") or e["eventTime"]).replace("Z", "+00:00"))
    return [e for e in events if stamp(e) >= t0]


class _Chaos(subprocess.Popen[str]):
    """`tidemark chaos --cluster demo …` as docs/kind.md shows it, as a user would run it, or
    with PLUGIN `kubectl tidemark chaos demo …` (kubectl finding the installed
    `kubectl-tidemark` on PATH). Its timeline goes to a file: a pipe nobody reads while the
    test waits could fill up."""

    def __init__(self, k: Kind, *args: str, plugin: bool = False) -> None:
        self.timeline = tempfile.TemporaryFile("w+")
        env = k.env()
        if plugin:
            env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
            argv = [str(k.bin_dir / "kubectl"), "tidemark", "chaos", "demo", *args, "--json"]
        else:
            argv = [sys.executable, "-m", "tidemark_cli.main", "chaos", "--cluster", "demo", *args, "--json"]
        super().__init__(argv, stdout=subprocess.PIPE, stderr=self.timeline, text=True, env=env, cwd=ROOT)


def _verdict(proc: _Chaos, timeout: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout)
    proc.timeline.seek(0)
    sys.stderr.write(proc.timeline.read()[-4000:])
    result = json.loads(out)
    assert proc.returncode == 0 and result["ok"], result
    assert result["lost"] == 0 and result["acked"] > 0 and result["verified"] and result["healed"], result
    assert result["fault_commits_per_s"] > 0, "writes stopped during the fault"
    return dict(result)


def test_chaos_cluster_kill_node_rebuilds_on_the_spare_through_an_operator_kill_mid_repair(demo: Kind) -> None:
    """docs/kind.md step 3: `tidemark chaos --cluster demo kill-node`: a worker holding a
    storage pod is killed, its segments are rebuilt on the zone's spare pod; the test also
    deletes the operator's pod as soon as the repair has started (its successor must
    finish it). The Job verifies every acknowledged commit."""
    k = demo
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    proc = _Chaos(k, "kill-node", "--seconds", "240")
    try:
        wait_for(lambda: _since(k.events("RepairStarted"), t0) or proc.poll() is not None, 600,
                 "a repair to start")
        assert proc.poll() is None, "the experiment ended before any repair started"
        k.kubectl("-n", "tidemark-system", "delete", "pod", "-l", OPERATOR, "--wait=false")
        result = _verdict(proc, 1500)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=60)
            for node in k.docker("ps", "-a", "--filter", f"label=io.x-k8s.kind.cluster={k.name}",
                                 "--filter", "status=exited", "--format", "{{.Names}}").split():
                k.docker("start", node)  # what the experiment would have started again
    fault = next(e["text"] for e in result["events"] if e["kind"] == "fault")
    lost_pod, zone = re.search(r"holds (\S+), (zone-\w+)\)", fault).groups()  # type: ignore[union-attr]
    rebuilt = [e["text"] for e in result["events"] if e["kind"] == "repair-done"]
    assert rebuilt, result["events"]
    for text in rebuilt:
        # "pg N: demo-zone-X-i replaced demo-zone-X-j": in the same zone, on the spare pod.
        assert f"replaced {lost_pod}" in text and f"demo-{zone}-" in text, text
    assert any("back to 6 healthy segments" in e["text"] for e in result["events"]), result["events"]


def test_plugin_chaos_restart_operator_goes_on_writing(demo: Kind) -> None:
    """`kubectl tidemark chaos demo restart-operator` (the plugin, the same code as `tidemark
    chaos --cluster`): writes never depend on the operator."""
    result = _verdict(_Chaos(demo, "restart-operator", "--seconds", "75", plugin=True), 900)
    assert any(e["text"] == "a new operator pod is ready" for e in result["events"]), result["events"]


def test_chaos_cluster_kill_zone_heals_with_nothing_lost(demo: Kind, tmp_path: Path) -> None:
    """docs/kind.md step 3: `tidemark chaos --cluster demo kill-zone --plot FILE`."""
    png = tmp_path / "kill-zone.png"
    demo.kubectl("create", "serviceaccount", "bystander")  # not the experiment's: must survive it
    result = _verdict(_Chaos(demo, "kill-zone", "--seconds", "100", "--plot", str(png)), 1500)
    kinds = [e["kind"] for e in result["events"]]
    assert "fault" in kinds and "recover" in kinds, result["events"]
    assert len(result["progress"]) > 50 and png.stat().st_size > 20_000
    # it deleted what it made, and only that
    assert not demo.kubectl("get", "jobs,serviceaccounts", "-o", "name").count("tidemark-chaos-")
    assert "serviceaccount/bystander" in demo.kubectl("get", "serviceaccounts", "-o", "name")
    demo.kubectl("delete", "serviceaccount", "bystander")


def test_hand_path_workload_job_through_chaos_kill_node_script(demo: Kind) -> None:
    """docs/kind.md step 3 by hand, as a user types it: `kubectl apply -f
    examples/workload-job.yaml`, `examples/chaos-kill-node.sh demo zone-b 150` (a worker
    holding a storage pod of zone-b killed for 150 s: past the node-loss timeout, so its
    segments are rebuilt on the zone's spare), then the Job completes with every
    acknowledged commit re-read."""
    k = demo
    t0 = dt.datetime.now(dt.UTC).replace(microsecond=0)
    k.kubectl("apply", "-f", "examples/workload-job.yaml")
    try:
        wait_for(lambda: any(p["status"].get("phase") == "Running" for p in k.pods("job-name=tidemark-workload")),
                 180, "the workload Job's pod running")
        script = subprocess.run(["bash", "examples/chaos-kill-node.sh", "demo", "zone-b", "150"], capture_output=True,
                                text=True, timeout=1200, env=k.env(), cwd=ROOT)
        sys.stderr.write(script.stdout[-3000:] + script.stderr[-2000:])
        assert script.returncode == 0, script.stderr[-3000:]
        killed = re.search(r"killing node (\S+) \(runs (\S+), zone zone-b\)", script.stdout)
        assert killed, script.stdout
        node, pod = killed.groups()
        assert node not in k.node_of("job-name=tidemark-workload")  # it spared the Job's worker
        # the docs' 150 s: NotReady (~40 s), the example's 1 min node-loss timeout, then ~10 s per PG
        wait_for(lambda: [e for e in _since(k.events("RepairFinished"), t0) if f"replaced {pod}" in e.get("message", "")],
                 300, f"{pod}'s segments rebuilt on the spare")
        k.kubectl("wait", "job/tidemark-workload", "--for=condition=complete", "--timeout=10m", timeout=620)
        logs = k.kubectl("logs", "job/tidemark-workload")
        assert re.search(r"verified: True", logs) and re.search(r"\blost: 0\b", logs), logs[-3000:]
    finally:
        k.kubectl("delete", "-f", "examples/workload-job.yaml", "--ignore-not-found", "--wait=true", timeout=180)


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _serving(k: Kind, name: str) -> bool:
    return bool(k.ac(name).get("status", {}).get("readyInstances") == "2/2")


@pytest.fixture(scope="module")
def database(kind_cluster: Kind) -> Iterator[dict[str, Any]]:
    """docs/kind.md step 4: MinIO in the cluster, then the database with its backups."""
    k = kind_cluster
    k.kubectl("delete", "ac", "demo", "--ignore-not-found", "--wait=true", timeout=300)
    k.kubectl("apply", "-f", "examples/minio.yaml")
    k.kubectl("wait", "deploy/minio", "--for=condition=Available", "--timeout=3m", timeout=200)
    k.kubectl("wait", "job/minio-make-bucket", "--for=condition=Complete", "--timeout=3m", timeout=200)
    k.kubectl("apply", "-f", "examples/database-cluster.yaml")
    try:
        k.kubectl("wait", f"ac/{DB}", "--for=condition=Ready", "--timeout=6m", timeout=380)
        wait_for(lambda: _serving(k, DB), 300, "writer and replica serving")
    except AssertionError:
        k.diagnose(DB)
        raise
    secret = k.json("get", "secret", f"{DB}-app")["data"]
    with tempfile.TemporaryDirectory() as tmp:
        ca = Path(tmp) / "ca.crt"  # the cluster's CA, as a user gets it: a ConfigMap, no Secret read
        ca.write_text(k.json("get", "configmap", f"{DB}-ca")["data"]["ca.crt"])
        yield {"password": base64.b64decode(secret["password"]).decode(), "ca": ca}


def test_psql_through_port_forward_to_rw_and_ro(kind_cluster: Kind, database: dict[str, Any]) -> None:
    """Over TLS, verify-full against the cluster's CA by the Services' names (#14)."""
    k, password = kind_cluster, database["password"]
    rw, ro = (f"{DB}-rw.default.svc", database["ca"]), (f"{DB}-ro.default.svc", database["ca"])
    try:
        with k.port_forward(f"svc/{DB}-rw") as port:
            psql(port, password, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)", verify=rw)
            with pytest.raises(AssertionError, match="does not match"):  # a name the certificate does not carry
                psql(port, password, "SELECT 1", verify=(f"{DB}-wrong.default.svc", database["ca"]))
            for i in range(1, 11):
                psql(port, password, f"INSERT INTO t VALUES ({i}, 'before T')")
            time.sleep(1.5)
            database["t"] = dt.datetime.now(dt.UTC)  # the kind nodes share this machine's clock
            time.sleep(1.5)
            database["after_t"] = dt.datetime.now(dt.UTC)  # before row 11 is committed
            for i in range(11, 21):
                psql(port, password, f"INSERT INTO t VALUES ({i}, 'after T')")
        with k.port_forward(f"svc/{DB}-ro") as port:
            wait_for(lambda: psql(port, password, "SELECT count(*) FROM t", verify=ro) == "20", 60,
                     "the replica reading 20 rows")
            with pytest.raises(AssertionError, match="read-only"):
                psql(port, password, "INSERT INTO t VALUES (99, 'no')")
    except AssertionError:
        k.diagnose(DB)
        raise


def test_restore_at_t_comes_up_with_its_instances_and_exactly_the_rows_before_t(
        kind_cluster: Kind, database: dict[str, Any], tmp_path: Path) -> None:
    k = kind_cluster
    assert "t" in database, "needs the rows of the psql test"

    def backed_up_past_t() -> bool:
        # The latest restorable time is the newest commit's (an idle database does not
        # move it): past the first commit after T, so the rows a restore at T must leave
        # out are in the bucket too.
        latest = k.ac(DB).get("status", {}).get("backup", {}).get("latestRestorableTime")
        return bool(latest) and _utc(latest) > database["after_t"]

    wait_for(backed_up_past_t, 300, "db's backup restorable past the first commit after T")
    # As a user would: uncomment pointInTime in a copy of the example and set it.
    text = (ROOT / "examples" / "restore-cluster.yaml").read_text()
    stamp = database["t"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    edited = re.sub(r'# pointInTime: "[^"]*"', f'pointInTime: "{stamp}"', text, count=1)
    assert edited != text, "restore-cluster.yaml has no pointInTime line to set"
    (tmp_path / "restore-cluster.yaml").write_text(edited)
    k.kubectl("apply", "-f", str(tmp_path / "restore-cluster.yaml"))
    try:
        k.kubectl("wait", f"ac/{RESTORED}", "--for=condition=Ready", "--timeout=8m", timeout=500)
        wait_for(lambda: _serving(k, RESTORED), 300, "the restored cluster's writer and replica serving")
        status = k.ac(RESTORED)["status"]
        assert status["restore"]["phase"] == "Done", status["restore"]
        password = base64.b64decode(k.json("get", "secret", f"{RESTORED}-app")["data"]["password"]).decode()
        with k.port_forward(f"svc/{RESTORED}-rw") as port:
            assert psql(port, password, "SELECT count(*), sum(k), min(v), max(v) FROM t") == \
                f"10|{sum(range(1, 11))}|before T|before T"
            assert psql(port, password, "PRAGMA integrity_check") == "ok"
            psql(port, password, "INSERT INTO t VALUES (11, 'written to the restored cluster')")
    except AssertionError:
        k.diagnose(RESTORED)
        raise
    finally:
        # Ten nodes on two cores: free the restored cluster before the failover test.
        k.kubectl("delete", "ac", RESTORED, "--ignore-not-found", "--wait=true", timeout=300, check=False)


def _since_kill(k: Kind, kill_utc: dt.datetime) -> str:
    """The operator's events of the failover, in seconds after the kill."""
    out = []
    for reason in ("WriterLeaseExpired", "InstanceNodeLost", "Failover"):
        for e in _since(k.events(reason), kill_utc):
            at = _utc(e.get("eventTime") or e.get("lastTimestamp") or e["firstTimestamp"])
            out.append(f"{reason} +{(at - kill_utc).total_seconds():.1f}s")
    return ", ".join(out) or "no operator events"


def test_writes_resume_through_rw_after_the_writer_worker_dies(kind_cluster: Kind, database: dict[str, Any]) -> None:
    k, password = kind_cluster, database["password"]
    writer = k.pods(f"tidemark.dev/cluster={DB},tidemark.dev/role=writer")[0]
    worker = writer["spec"]["nodeName"]
    if worker in k.node_of(OPERATOR, "tidemark-system"):
        # Killing the operator's worker too would leave nobody to fail over for minutes.
        k.kubectl("cordon", worker)
        k.kubectl("delete", "pod", writer["metadata"]["name"], "--wait=true", timeout=120)
        k.kubectl("uncordon", worker)
        wait_for(lambda: _serving(k, DB), 300, "the writer back")
        worker = k.pods(f"tidemark.dev/cluster={DB},tidemark.dev/role=writer")[0]["spec"]["nodeName"]
    t_kill, kill_utc = time.monotonic(), dt.datetime.now(dt.UTC)
    k.docker("kill", worker)

    def insert_21() -> bool:
        # A fresh port-forward each try: it follows one pod, picked when it starts. A try
        # that picked the dead writer (kubectl prefers the older Ready pod while both
        # exist) never gets a stream to its kubelet: it gives up after 6 s, so a resumed
        # writer is seen here at most ~7 s late.
        with k.port_forward(f"svc/{DB}-rw", listen_timeout=6) as port:
            psql(port, password, "INSERT INTO t VALUES (21, 'after the failover')", timeout=20, connect_timeout=5)
        return True

    try:
        wait_for(insert_21, 420, "a write accepted by the new writer", interval=1)
        sys.stderr.write(f"\nwriter worker killed -> write accepted again: {time.monotonic() - t_kill:.0f}s "
                         f"({_since_kill(k, kill_utc)})\n")
        with k.port_forward(f"svc/{DB}-rw") as port:
            assert psql(port, password, "SELECT count(*), sum(k) FROM t") == f"21|{sum(range(1, 22))}"
            assert psql(port, password, "PRAGMA integrity_check") == "ok"
    except AssertionError:
        k.diagnose(DB)
        raise
    finally:
        k.docker("start", worker)
    k.kubectl("wait", f"node/{worker}", "--for=condition=Ready", "--timeout=180s", timeout=200)
