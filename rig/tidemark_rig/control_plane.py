"""A real control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
kube-scheduler, kwok with zone-labelled fake nodes, and the pod runner.

Flag sets follow kwokctl's "binary" runtime, trimmed: plain-HTTP etcd on loopback, TLS
apiserver with a generated CA, an admin (system:masters) kubeconfig for every client, and
shortened node-monitor timings so node failures are noticed within seconds.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import ssl
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from . import kwok_nodes, pki
from .pod_runner import read_state
from .procs import ProcessGroup, RigError, free_port, kill_pid, pid_runs, tail, wait_for
from .versions import bin_path, missing_binaries

CONTROL_PLANE_BINS = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"]
STATE_FILE = "cluster.json"
# Teardown order: the pod runner first (it kills its pod processes), the apiserver's clients
# next, etcd last.
STOP_ORDER = ["pod-runner", "kwok", "kube-scheduler", "kube-controller-manager", "kube-apiserver",
              "etcd"]


@dataclass
class ClusterConfig:
    zones: list[str] = field(default_factory=lambda: ["zone-a", "zone-b", "zone-c"])
    nodes_per_zone: int = 2
    pod_runner: bool = True
    # second octet of the nodes' 127.X.i.0/24 pod CIDRs; random per rig unless given
    pod_cidr_octet: int | None = None
    start_timeout: float = 120.0


@dataclass
class ClusterState:
    dir: str
    kubeconfig: str
    server: str
    ports: dict[str, int]
    nodes: list[dict[str, str]]
    zones: list[str]
    started_at: float
    up_seconds: float = 0.0


def _wait_log(log: Path) -> Callable[[], str]:
    return lambda: f"--- {log.name} tail ---\n{tail(log)}"


class ControlPlane:
    """Start with :meth:`up`, stop with :meth:`down`; one directory holds everything."""

    def __init__(self, rig_dir: Path, config: ClusterConfig | None = None) -> None:
        self.dir = rig_dir.resolve()
        self.config = config or ClusterConfig()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.procs = ProcessGroup(self.dir)
        self.kubeconfig = self.dir / "kubeconfig"
        self.state: ClusterState | None = None
        self._api: Any = None

    # -- clients -------------------------------------------------------------------------------
    def api_client(self) -> Any:
        if self._api is None:
            from kubernetes import config as kconfig

            self._api = kconfig.new_client_from_config(config_file=str(self.kubeconfig))
        return self._api

    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client())

    def _ssl(self, p: pki.Pki) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(p.ca_crt))
        ctx.load_cert_chain(str(p.admin_crt), str(p.admin_key))
        return ctx

    @staticmethod
    def _get(url: str, ctx: ssl.SSLContext | None) -> bool:
        with urllib.request.urlopen(url, timeout=3, context=ctx) as resp:  # noqa: S310 - loopback
            return resp.status == 200

    # -- lifecycle -----------------------------------------------------------------------------
    def up(self, log: Callable[[str], None] = lambda s: None) -> ClusterState:
        missing = [b for b in missing_binaries() if b in CONTROL_PLANE_BINS]
        if missing:
            raise RigError(
                f"missing rig binaries {missing} (expected at {[str(bin_path(b)) for b in missing]}); "
                "run `tidemark dev install-bins`"
            )
        t0 = time.monotonic()
        try:
            state = self._up(log)
        except BaseException:
            # Never leave half a cluster behind.
            self.down(quiet=True)
            raise
        state.up_seconds = round(time.monotonic() - t0, 2)
        self._save(state)
        log(f"control plane up in {state.up_seconds:.1f}s ({self.dir})")
        return state

    def _up(self, log: Callable[[str], None]) -> ClusterState:
        cfg = self.config
        timeout = cfg.start_timeout
        # Each `up` is a new cluster: old etcd data would hold stale nodes and pods.
        for stale in ("etcd-data", "pods", "pod-runner.json"):
            path = self.dir / stale
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        log("generating certificates and keys")
        p = pki.generate(self.dir / "pki")
        ports = {
            "etcd": free_port(), "etcd-peer": free_port(), "kube-apiserver": free_port(),
            "kube-controller-manager": free_port(), "kube-scheduler": free_port(),
            "kwok": free_port(),
        }
        server = f"https://127.0.0.1:{ports['kube-apiserver']}"
        pki.write_kubeconfig(self.kubeconfig, p, server)
        kc = str(self.kubeconfig)

        log("starting etcd")
        etcd_url = f"http://127.0.0.1:{ports['etcd']}"
        peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
        etcd = self.procs.start(
            "etcd",
            [str(bin_path("etcd")), "--name=rig", f"--data-dir={self.dir / 'etcd-data'}",
             f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
             f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
             f"--initial-cluster=rig={peer_url}", "--initial-cluster-state=new",
             # test data: durability across machine crashes is not needed, speed is
             "--unsafe-no-fsync=true", "--log-level=warn", "--quota-backend-bytes=4294967296"],
            ports=[ports["etcd"], ports["etcd-peer"]],
        )
        wait_for(lambda: self._alive("etcd") and self._get(f"{etcd_url}/health", None),
                 timeout, "etcd /health", on_timeout=_wait_log(etcd.log))

        log("starting kube-apiserver")
        api = self.procs.start(
            "kube-apiserver",
            [str(bin_path("kube-apiserver")), f"--etcd-servers={etcd_url}",
             "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
             f"--secure-port={ports['kube-apiserver']}",
             f"--tls-cert-file={p.apiserver_crt}", f"--tls-private-key-file={p.apiserver_key}",
             f"--client-ca-file={p.ca_crt}",
             # fills the extension-apiserver-authentication ConfigMap that kcm/scheduler read
             f"--requestheader-client-ca-file={p.ca_crt}",
             "--requestheader-allowed-names=front-proxy-client",
             "--requestheader-username-headers=X-Remote-User",
             "--requestheader-group-headers=X-Remote-Group",
             "--requestheader-extra-headers-prefix=X-Remote-Extra-",
             f"--service-account-key-file={p.sa_pub}",
             f"--service-account-signing-key-file={p.sa_key}",
             "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
             f"--service-cluster-ip-range={pki.SERVICE_CIDR}",
             "--authorization-mode=Node,RBAC", "--allow-privileged=true",
             f"--cert-dir={self.dir / 'apiserver-certs'}",
             "--enable-priority-and-fairness=false", "--profiling=false",
             "--event-ttl=10m"],
            ports=[ports["kube-apiserver"]],
        )
        ctx = self._ssl(p)
        wait_for(lambda: self._alive("kube-apiserver") and self._get(f"{server}/readyz", ctx),
                 timeout, "kube-apiserver /readyz", on_timeout=_wait_log(api.log))

        log("starting kube-controller-manager, kube-scheduler, kwok")
        kcm = self.procs.start(
            "kube-controller-manager",
            [str(bin_path("kube-controller-manager")), f"--kubeconfig={kc}",
             f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
             "--bind-address=127.0.0.1", f"--secure-port={ports['kube-controller-manager']}",
             f"--cert-dir={self.dir / 'kcm-certs'}", "--leader-elect=false",
             f"--service-account-private-key-file={p.sa_key}", f"--root-ca-file={p.ca_crt}",
             "--use-service-account-credentials=false",
             f"--service-cluster-ip-range={pki.SERVICE_CIDR}", "--allocate-node-cidrs=false",
             # notice a dead node in seconds, not the default 40s+
             "--node-monitor-period=2s", "--node-monitor-grace-period=20s",
             "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller"],
            ports=[ports["kube-controller-manager"]],
        )
        sched = self.procs.start(
            "kube-scheduler",
            [str(bin_path("kube-scheduler")), f"--kubeconfig={kc}",
             f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
             "--bind-address=127.0.0.1", f"--secure-port={ports['kube-scheduler']}",
             f"--cert-dir={self.dir / 'scheduler-certs'}", "--leader-elect=false"],
            ports=[ports["kube-scheduler"]],
        )
        kwok_cfg = self.dir / "kwok.yaml"
        kwok_cfg.write_text(kwok_nodes.KWOK_CONFIG)
        kwok = self.procs.start(
            "kwok",
            [str(bin_path("kwok")), f"--kubeconfig={kc}", f"--config={kwok_cfg}",
             "--manage-all-nodes=false",
             f"--manage-nodes-with-annotation-selector={kwok_nodes.KWOK_SELECTOR}",
             "--node-ip=127.0.0.1", "--cidr=127.254.0.0/16",
             f"--server-address=127.0.0.1:{ports['kwok']}", "--node-lease-duration-seconds=40"],
            ports=[ports["kwok"]],
        )
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # self-signed serving certs of kcm/scheduler
        for proc, port in ((kcm, ports["kube-controller-manager"]), (sched, ports["kube-scheduler"])):
            wait_for(
                lambda proc=proc, port=port: self._alive(proc.name)
                and self._get(f"https://127.0.0.1:{port}/healthz", insecure),
                timeout, f"{proc.name} /healthz", on_timeout=_wait_log(proc.log),
            )
        wait_for(lambda: self._alive("kwok") and self._get(f"http://127.0.0.1:{ports['kwok']}/healthz", None),
                 timeout, "kwok /healthz", on_timeout=_wait_log(kwok.log))

        octet = cfg.pod_cidr_octet or random.randint(64, 250)
        specs = kwok_nodes.plan_nodes(cfg.zones, cfg.nodes_per_zone, octet)
        log(f"creating {len(specs)} kwok nodes in zones {', '.join(cfg.zones)}")
        core = self.core()
        for spec in specs:
            core.create_node(kwok_nodes.node_manifest(spec), _request_timeout=10)
        wait_for(lambda: self.ready_nodes() >= {s.name for s in specs}, timeout,
                 f"{len(specs)} nodes Ready", on_timeout=_wait_log(kwok.log))
        # Pods need the default ServiceAccount (created by the controller-manager).
        wait_for(lambda: core.read_namespaced_service_account("default", "default",
                                                              _request_timeout=5),
                 timeout, "ServiceAccount default/default", on_timeout=_wait_log(kcm.log))

        if cfg.pod_runner:
            log("starting the pod runner")
            env = dict(os.environ)
            env["PYTHONUNBUFFERED"] = "1"
            self.procs.start(
                "pod-runner",
                [sys.executable, "-m", "tidemark_rig.pod_runner", f"--kubeconfig={kc}",
                 f"--dir={self.dir}"],
                env=env,
            )
        state = ClusterState(
            dir=str(self.dir), kubeconfig=kc, server=server, ports=ports,
            nodes=[asdict(s) for s in specs], zones=list(cfg.zones), started_at=time.time(),
        )
        self.state = state
        return state

    def _alive(self, name: str) -> bool:
        self.procs.check_alive(name)  # raises with the log tail if it died
        return True

    def _save(self, state: ClusterState) -> None:
        (self.dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))

    def down(self, quiet: bool = False) -> float:
        """Kill every process this rig started (by pid) and check their ports are free."""
        t0 = time.monotonic()
        try:
            self.procs.stop_all(STOP_ORDER, grace={"pod-runner": 5.0, "minio": 5.0})
        except RigError:
            if not quiet:
                raise
        finally:
            self._kill_pod_processes()
        self._api = None
        return time.monotonic() - t0

    def _kill_pod_processes(self) -> None:
        # The pod runner kills its children on SIGTERM and they carry PDEATHSIG; this catches
        # any left over if the runner itself was SIGKILLed mid-way.

        for rec in read_state(self.dir).values():
            pid, argv = rec.get("pid"), rec.get("argv") or [""]
            if pid and pid_runs(pid, argv[0]):
                kill_pid(pid)

    # -- queries & faults ----------------------------------------------------------------------
    def ready_nodes(self) -> set[str]:
        nodes = self.core().list_node(_request_timeout=5).items
        return {n.metadata.name for n in nodes if kwok_nodes.node_ready(n)}

    def delete_node(self, name: str) -> None:
        self.core().delete_node(name, _request_timeout=10)

    def mark_node_not_ready(self, name: str) -> None:
        """Make NAME look dead: kwok stops managing it (no lease renewals), Ready=Unknown."""
        core = self.core()
        core.patch_node(name, {"metadata": {"annotations": {kwok_nodes.KWOK_ANNOTATION: None}}},
                        _request_timeout=10)
        node = core.read_node(name, _request_timeout=10)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        conds = []
        for c in node.status.conditions or []:
            if c.type == "Ready":
                conds.append({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                              "message": "marked NotReady by the tidemark rig",
                              "lastHeartbeatTime": now, "lastTransitionTime": now})
        core.patch_node_status(name, {"status": {"conditions": conds}}, _request_timeout=10)

    def restore_nodes(self, timeout: float = 60.0) -> None:
        """Undo node faults: recreate deleted nodes, hand NotReady ones back to kwok, wait Ready.
        Tests that break nodes call this so the session's shared cluster stays whole."""
        from kubernetes.client.exceptions import ApiException

        state = self.state or load_state(self.dir)
        if state is None:
            raise RigError(f"no cluster state in {self.dir}")
        core = self.core()
        for rec in state.nodes:
            spec = kwok_nodes.NodeSpec(**rec)
            try:
                node = core.read_node(spec.name, _request_timeout=10)
            except ApiException as exc:
                if exc.status != 404:
                    raise
                core.create_node(kwok_nodes.node_manifest(spec), _request_timeout=10)
                continue
            if (node.metadata.annotations or {}).get(kwok_nodes.KWOK_ANNOTATION) is None:
                core.patch_node(spec.name, {"metadata": {"annotations": {
                    kwok_nodes.KWOK_ANNOTATION: kwok_nodes.KWOK_ANNOTATION_VALUE}}},
                    _request_timeout=10)
        names = {rec["name"] for rec in state.nodes}
        wait_for(lambda: self.ready_nodes() >= names, timeout, "restored nodes Ready")

    def log_files(self) -> dict[str, Path]:
        return self.procs.logs()


def load_state(rig_dir: Path) -> ClusterState | None:
    try:
        return ClusterState(**json.loads((rig_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None
