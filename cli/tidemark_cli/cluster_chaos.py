"""`tidemark chaos --cluster NAME EXPERIMENT`: the chaos experiments against an
AuroraCluster on a kind cluster, with the same timeline, verdict and summary keys as the
playground's.

Faults are what a person does to a kind cluster: `docker kill` of worker containers
(kill-node, kill-zone) and deleting the operator's pod (restart-operator). Killed workers
are always started again. The verifying workload runs in the cluster (chaos_job.py); a
worker holding it is never a victim, and neither is the last worker running an operator
replica (the chart runs two peers: a fault may take one of them, never both). The timeline joins the workload's
progress lines, the AuroraCluster's status (healthy segments per PG, VDL) and its repair
events.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from rich.console import Console

from tidemark_operator.model import CLUSTER_LABEL, GROUP, PLURAL, VERSION, ZONE_POD_LABEL
from tidemark_operator.topology import kube_namespace
from tidemark_protocol.errors import UserError

from .chaos_job import WorkloadJob, parse_logs

OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
ZONE_LABEL = "topology.kubernetes.io/zone"
HOLD_S = 30.0  # how long a killed zone (or a node with no spare to rebuild on) stays down
SECONDS = {"kill-node": 420.0, "kill-zone": 150.0, "restart-operator": 120.0}  # the workload's length


class ChaosError(UserError):
    """The experiment cannot run against this cluster (one line for the user)."""


@dataclass
class ClusterRun:
    name: str
    namespace: str
    console: Console
    t0: float = field(default_factory=time.time)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    health: list[tuple[float, int, int]] = field(default_factory=list)  # (t, min healthy segments, vdl)
    killed: list[str] = field(default_factory=list)  # worker containers to start again
    avoid: set[str] = field(default_factory=set)  # nodes never killed: the workload's
    operators: set[str] = field(default_factory=set)  # nodes running an operator replica

    def spares_an_operator(self, victims: set[str]) -> bool:
        """Killing VICTIMS leaves an operator replica running (or there is none in the cluster)."""
        return not self.operators or bool(self.operators - victims)

    def now(self) -> float:
        return time.time() - self.t0

    def event(self, kind: str, text: str) -> None:
        self.events.append((self.now(), kind, text))
        self.console.print(f"[dim]{self.now():6.1f}s[/dim]  [{'red' if kind == 'fault' else 'cyan'}]{text}[/]")

    def ac(self) -> dict[str, Any]:
        return dict(client.CustomObjectsApi().get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, _request_timeout=10))

    def sample(self) -> dict[str, Any]:
        status = self.ac().get("status") or {}
        segments = [int(n) for n in (status.get("segments") or {}).values()]
        self.health.append((self.now(), min(segments) if segments else 0, int(status.get("vdl") or 0)))
        return status

    def wait(self, pred: Callable[[dict[str, Any]], bool], timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if pred(self.sample()):
                    return True
            except ApiException as exc:  # the API server can blink while its node is busy
                self.console.print(f"[dim]api: {exc.status} {exc.reason}[/dim]")
            time.sleep(2)
        self.event("info", f"gave up after {timeout:.0f}s waiting for {what}")
        return False

    def vdl_moves(self, timeout: float, what: str) -> bool:
        start = int((self.sample().get("vdl")) or 0)
        return self.wait(lambda st: int(st.get("vdl") or 0) > start, timeout, f"writes going on ({what})")

    def storage_pods(self) -> list[Any]:
        return list(client.CoreV1Api().list_namespaced_pod(
            self.namespace, label_selector=f"{CLUSTER_LABEL}={self.name},{ZONE_POD_LABEL}",
            _request_timeout=10).items)


def healed(status: dict[str, Any]) -> bool:
    segments = [int(n) for n in (status.get("segments") or {}).values()]
    degraded = next((c["status"] for c in status.get("conditions") or [] if c["type"] == "Degraded"), None)
    return bool(segments) and min(segments) == 6 and degraded == "False"


def docker(*args: str) -> None:
    path = shutil.which("docker")
    if path is None:
        raise ChaosError("--cluster needs the docker client (the kind nodes are docker containers)")
    done = subprocess.run([path, *args], capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise ChaosError(f"docker {' '.join(args)}: {done.stderr.strip()}")


def workers_by_zone() -> dict[str, list[str]]:
    zones: dict[str, list[str]] = {}
    for node in client.CoreV1Api().list_node(_request_timeout=10).items:
        if not (node.spec.provider_id or "").startswith("kind://docker/"):
            raise ChaosError(f"node {node.metadata.name} is not a kind node (providerID "
                             f"{node.spec.provider_id!r}): --cluster kills docker containers")
        zone = (node.metadata.labels or {}).get(ZONE_LABEL)
        if zone:
            zones.setdefault(zone, []).append(node.metadata.name)
    return zones


def node_ready(name: str) -> bool:
    node = client.CoreV1Api().read_node(name, _request_timeout=10)
    return any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])


def start_killed(run: ClusterRun) -> None:
    for worker in run.killed:
        docker("start", worker)
    deadline = time.monotonic() + 180
    while run.killed and time.monotonic() < deadline:
        run.killed = [w for w in run.killed if not _ready_quietly(w)]
        time.sleep(2)


def _ready_quietly(name: str) -> bool:
    try:
        return node_ready(name)
    except ApiException:
        return False


# -- experiments ----------------------------------------------------------------------
def kill_node(run: ClusterRun) -> None:
    victim = next((p for p in run.storage_pods() if p.spec.node_name and p.spec.node_name not in run.avoid
                   and run.spares_an_operator({p.spec.node_name})), None)
    if victim is None:
        raise ChaosError("every storage pod shares a worker with the workload or the only operator")
    worker, zone = victim.spec.node_name, victim.metadata.labels[ZONE_POD_LABEL]
    spare = int((run.ac().get("spec") or {}).get("nodesPerZone", 2)) > 2
    run.event("fault", f"docker kill {worker} (holds {victim.metadata.name}, {zone})"
              + ("; its segments get rebuilt on the zone's spare pod" if spare else "; no spare: held down"))
    run.killed.append(worker)
    docker("kill", worker)
    run.vdl_moves(90, f"{worker} killed")
    if spare:
        t_kill = time.time()
        rebuilt = run.wait(lambda st: healed_pgs(st) and repairs_finished_since(run, t_kill), 900,
                           "the lost segments rebuilt")
        if rebuilt:
            run.event("info", "every PG back to 6 healthy segments while the worker is down")
    else:
        time.sleep(HOLD_S)
    run.event("recover", f"docker start {worker}")
    start_killed(run)


def healed_pgs(status: dict[str, Any]) -> bool:
    segments = [int(n) for n in (status.get("segments") or {}).values()]
    return bool(segments) and min(segments) == 6


def repairs_finished_since(run: ClusterRun, since: float) -> bool:
    events = client.CoreV1Api().list_namespaced_event(
        run.namespace, field_selector=f"involvedObject.name={run.name},reason=RepairFinished",
        _request_timeout=10).items
    return any((e.last_timestamp or e.event_time) and (e.last_timestamp or e.event_time).timestamp() >= since - 1
               for e in events)


def kill_zone(run: ClusterRun) -> None:
    zones = workers_by_zone()
    zone = next((z for z, ws in sorted(zones.items())
                 if not set(ws) & run.avoid and run.spares_an_operator(set(ws))), None)
    if zone is None:
        raise ChaosError("every zone has a worker running the workload or every operator replica")
    run.event("fault", f"docker kill every worker of {zone} ({', '.join(sorted(zones[zone]))}): writes go on with 4/6")
    t_fault = time.monotonic()
    for worker in zones[zone]:
        run.killed.append(worker)
        docker("kill", worker)
    run.vdl_moves(90, f"{zone} down")
    time.sleep(max(0.0, HOLD_S - (time.monotonic() - t_fault)))
    run.event("recover", f"{zone} returns (docker start)")
    start_killed(run)


def restart_operator(run: ClusterRun) -> None:
    core = client.CoreV1Api()
    pods = core.list_pod_for_all_namespaces(label_selector=OPERATOR_SELECTOR, _request_timeout=10).items
    if not pods:
        raise ChaosError(f"no operator pod ({OPERATOR_SELECTOR}) in the cluster")
    old = {p.metadata.name for p in pods}
    run.event("fault", f"delete the operator pod{'s' if len(pods) > 1 else ''} ({', '.join(sorted(old))})")
    for p in pods:
        core.delete_namespaced_pod(p.metadata.name, p.metadata.namespace, _request_timeout=10)

    def replaced(_: dict[str, Any]) -> bool:
        now = core.list_pod_for_all_namespaces(label_selector=OPERATOR_SELECTOR, _request_timeout=10).items
        return any(p.metadata.name not in old and any(c.ready for c in p.status.container_statuses or [])
                   for p in now)

    if run.wait(replaced, 180, "a new operator pod ready"):
        run.event("recover", "a new operator pod is ready")
    run.vdl_moves(60, "after the operator restart")


EXPERIMENTS: dict[str, Callable[[ClusterRun], None]] = {
    "kill-node": kill_node,
    "kill-zone": kill_zone,
    "restart-operator": restart_operator,
}


def _check_cluster(run: ClusterRun) -> str:
    """The cluster's image, once it is known to be a storage-only cluster that is Ready."""
    try:
        ac = run.ac()
    except ApiException as exc:
        raise ChaosError(f"AuroraCluster {run.namespace}/{run.name}: {exc.status} {exc.reason}") from exc
    if int((ac.get("spec") or {}).get("instances") or 0) > 0:
        # The raw page workload opens its own writer: it would fence the database's.
        raise ChaosError(f"{run.name} runs database instances: the chaos workload would fence its writer; "
                         "use a storage-only cluster (spec.instances: 0)")
    ready = next((c["status"] for c in (ac.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), None)
    if ready != "True":
        raise ChaosError(f"{run.name} is not Ready (Ready={ready}); wait for it first")
    pods = run.storage_pods()
    if not pods:
        raise ChaosError(f"{run.name} has no storage pods")
    return str(pods[0].spec.containers[0].image)


def run_cluster_experiment(name: str, cluster: str, namespace: str | None, seconds: float | None,
                           console: Console) -> tuple[ClusterRun, dict[str, Any]]:
    """Run EXPERIMENT; returns the run (for the plot) and its verdict."""
    ns = kube_namespace(namespace)
    run = ClusterRun(cluster, ns, console)
    image = _check_cluster(run)
    workers_by_zone()  # refuses a cluster that is not kind before anything is made
    job = WorkloadJob(cluster, ns, image, seconds or SECONDS[name])
    report = None
    try:
        job.start()
        run.event("info", f"workload Job {job.name} ({image}) for {job.seconds:.0f}s")
        if not run.wait(lambda _: (p := job.pod()) is not None and p.status.phase == "Running", 180,
                        "the workload pod running"):
            raise ChaosError(f"the workload pod of Job {job.name} did not start")
        run.avoid = {job.pod().spec.node_name}
        run.operators = {p.spec.node_name for p in client.CoreV1Api().list_pod_for_all_namespaces(
            label_selector=OPERATOR_SELECTOR, _request_timeout=10).items if p.spec.node_name}
        run.vdl_moves(90, "workload started")
        time.sleep(15)  # a steady state before the fault
        EXPERIMENTS[name](run)
        ok_heal = run.wait(healed, 600, "every PG at 6 healthy segments and Degraded False")
        run.event("info", "cluster healed: every PG 6/6, Degraded False" if ok_heal else "cluster did NOT heal")
        run.wait(lambda _: job.finished(), job.seconds + 300, "the workload Job to finish")
        report = parse_logs(job.logs())
        add_repair_events(run)
    finally:
        start_killed(run)
        job.delete()
    return run, verdict(run, name, ok_heal, report)


def add_repair_events(run: ClusterRun) -> None:
    """The operator's repair events of this run on the timeline."""
    events = client.CoreV1Api().list_namespaced_event(
        run.namespace, field_selector=f"involvedObject.name={run.name}", _request_timeout=10).items
    for e in events:
        stamp = e.last_timestamp or e.event_time
        if e.reason in ("RepairStarted", "RepairFinished") and stamp and stamp.timestamp() >= run.t0:
            kind = "repair" if e.reason == "RepairStarted" else "repair-done"
            run.events.append((stamp.timestamp() - run.t0, kind, e.message or e.reason))


def verdict(run: ClusterRun, name: str, ok_heal: bool, report: Any) -> dict[str, Any]:
    summary = report.summary if report is not None else None
    verified = bool(summary and summary.get("verified") and summary.get("lost") == 0)
    # Every experiment here leaves a write quorum: commits must go on through the fault.
    during = fault_commit_rate(run, report.progress if report is not None else [])
    failed = f"the workload failed: {report.error}" if report is not None and report.error else \
        "the workload printed no summary"
    run.event("info", f"verification: {summary.get('acked')} acked, {summary.get('lost')} lost"
              if summary else f"verification: {failed}")
    return {"experiment": name, "cluster": run.name, "namespace": run.namespace,
            "ok": ok_heal and verified and (during is None or during > 0), "healed": ok_heal,
            "fault_commits_per_s": during, "acked": summary.get("acked") if summary else None,
            "lost": summary.get("lost") if summary else None, "verified": verified,
            "events": [{"t_s": round(t, 2), "kind": k, "text": x} for t, k, x in sorted(run.events)],
            "progress": report.progress if report is not None else []}


def fault_commit_rate(run: ClusterRun, progress: list[dict[str, Any]]) -> float | None:
    """Mean commits/s while a fault was in place (None: no fault window, no progress)."""
    windows, opened = [], None
    for t, kind, _ in sorted(run.events):
        if kind == "fault" and opened is None:
            opened = t
        elif kind == "recover" and opened is not None:
            windows.append((run.t0 + opened, run.t0 + t))
            opened = None
    inside = [p["window_commits"] for p in progress if any(a <= p["t"] <= b for a, b in windows)]
    return round(sum(inside) / len(inside), 1) if inside else None
