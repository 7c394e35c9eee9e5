"""Pod runner: a local process for each kwok pod that carries the run-local label.

kwok marks pods Running but runs nothing. For every pod labelled
``tidemark.dev/run-local=true`` that is Running with a pod IP on a Ready node, this runs the
first container's command+args as a local process with the pod's environment (plain values
and downward-API fieldRefs) plus ``TIDEMARK_POD_IP``/``POD_IP``, ``TIDEMARK_POD_NAME``,
``TIDEMARK_POD_NAMESPACE``, ``TIDEMARK_NODE_NAME`` and ``TIDEMARK_ZONE`` (the node's
``topology.kubernetes.io/zone`` label). The process is meant to bind the pod IP (a loopback
address from the node's podCIDR).

Like a kubelet, it also materialises the first container's `secret` volumes (files under
the pod's directory, at the mount path, mode 0400 unless the volume says otherwise; laid
out as the kubelet's AtomicWriter does: the files in a timestamped `..YYYY_MM_DD_...` dir,
a `..data` symlink to it and one symlink per entry through `..data`), refreshes them in
running pods when the Secret changes (every ``--volume-refresh`` seconds, default 3; the
kubelet takes up to about a minute: a new dir, then one atomic rename of `..data`, so a
process never sees half an update, e.g. a new certificate with the old key) and,
unless the pod sets ``automountServiceAccountToken: false``, gives the process its
ServiceAccount's identity: a token from the TokenRequest API (bound to the pod) in a
kubeconfig named by ``KUBECONFIG``, so RBAC applies to pod processes as in a cluster.

The process is SIGKILLed when the pod is deleted (or being deleted), when its node is
deleted, or when the node is not Ready - like a machine that vanished. A process that exits
by itself is restarted with back-off when the pod's restartPolicy is Always.

It is one thread polling the API (simple, bounded, survives apiserver restarts); children
get PR_SET_PDEATHSIG so they die with the runner even if it is SIGKILLed, and their pids are
kept in ``DIR/pod-runner.json`` for the rig's teardown.

Run: ``python -m tidemark_rig.pod_runner --kubeconfig K --dir D``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kwok_nodes import ZONE_LABEL, node_ready

RUN_LOCAL_LABEL = "tidemark.dev/run-local"
RUN_LOCAL_SELECTOR = f"{RUN_LOCAL_LABEL}=true"
STATE_FILE = "pod-runner.json"
DATA_LINK = "..data"  # the kubelet's AtomicWriter names
VOLUME_REFRESH_S = 3.0

log = logging.getLogger("tidemark_rig.pod_runner")


def _pdeathsig() -> None:
    # Runs in the child between fork and exec: die with the runner, and own process group.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes $(VAR) expansion: known vars replaced, unknown left as is, $$ -> $."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR.sub(sub, s)


def pod_bind(arg: str, pod_ip: str) -> str:
    """A pod binding every address (0.0.0.0:PORT, or a bare 0.0.0.0 as in `--host 0.0.0.0`)
    gets its own network namespace; here all pods share the machine's, so the wildcard
    becomes the pod's loopback IP (as binding 0.0.0.0 in its namespace reaches the pod IP;
    its 127.0.0.1 has no counterpart here)."""
    if not pod_ip:
        return arg
    if arg == "0.0.0.0":
        return pod_ip
    return f"{pod_ip}:{arg.removeprefix('0.0.0.0:')}" if arg.startswith("0.0.0.0:") else arg


def _field(pod: dict[str, Any], path: str, node: dict[str, Any] | None) -> str:
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    return str(simple.get(path) or "")


def pod_env(pod: dict[str, Any], node: dict[str, Any] | None,
            secret: Any = None) -> dict[str, str]:
    """The environment the pod's first container would get (inherits PATH etc. from us).
    secret(namespace, name, key) -> str | None resolves valueFrom.secretKeyRef."""
    env = dict(os.environ)
    meta, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
    zone = ((node or {}).get("metadata", {}).get("labels") or {}).get(ZONE_LABEL, "")
    env.update(
        {
            "POD_IP": status.get("podIP", ""),
            "TIDEMARK_POD_IP": status.get("podIP", ""),
            "TIDEMARK_POD_NAME": meta["name"],
            "TIDEMARK_POD_NAMESPACE": meta["namespace"],
            "TIDEMARK_NODE_NAME": spec.get("nodeName", ""),
            "TIDEMARK_ZONE": zone,
        }
    )
    container = spec["containers"][0]
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item and item["value"] is not None:
            env[name] = expand(str(item["value"]), env)
        elif (vf := item.get("valueFrom")) and vf.get("fieldRef"):
            env[name] = _field(pod, vf["fieldRef"]["fieldPath"], node)
        elif (vf := item.get("valueFrom")) and vf.get("secretKeyRef") and secret is not None:
            ref = vf["secretKeyRef"]
            value = secret(meta["namespace"], ref["name"], ref["key"])
            if value is not None:
                env[name] = value
        # configMap refs are not resolved: the rig's callers pass plain values.
    return env


def write_token_kubeconfig(cfg: Any, sa: str, namespace: str, token: str, path: Path) -> Path:
    """A kubeconfig at PATH (mode 0600) that authenticates to CFG's apiserver as the
    ServiceAccount NAMESPACE/SA with TOKEN (a TokenRequest token)."""
    doc = {
        "apiVersion": "v1", "kind": "Config", "current-context": "pod",
        "clusters": [{"name": "rig", "cluster": {"server": cfg.host, "certificate-authority": str(cfg.ssl_ca_cert)}}],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "pod", "context": {"cluster": "rig", "user": sa, "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    path.chmod(0o600)
    return path


Payload = dict[str, tuple[bytes, int]]  # path in the volume -> (content, mode)


def _payload_on_disk(target: Path) -> Payload | None:
    """What TARGET's `..data` holds now (None: no kubelet-style volume there yet)."""
    data = target / DATA_LINK
    if not data.is_symlink():
        return None
    out: Payload = {}
    try:
        for path in sorted(data.resolve().rglob("*")):
            if path.is_file():
                out[str(path.relative_to(data.resolve()))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    except OSError:
        return None
    return out


def write_volume(target: Path, payload: Payload) -> bool:
    """Make TARGET hold PAYLOAD as the kubelet's AtomicWriter does; False when it already
    did (nothing written). The files go to a new `..<timestamp>` dir, then `..data` is
    swapped to it with one rename (readers see all old or all new files), the entries are
    symlinks through `..data`, and the previous dir and entries gone from PAYLOAD are
    removed. Entries left by an older layout (plain files) are replaced."""
    target.mkdir(parents=True, exist_ok=True)
    if _payload_on_disk(target) == payload:
        return False
    new = Path(tempfile.mkdtemp(prefix=time.strftime("..%Y_%m_%d_%H_%M_%S.", time.gmtime()), dir=target))
    for rel, (content, mode) in payload.items():
        path = new / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    new.chmod(0o755)
    tmp_link = target / (DATA_LINK + "_tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp_link.unlink()
    tmp_link.symlink_to(new.name)
    os.replace(tmp_link, target / DATA_LINK)
    tops = {Path(rel).parts[0] for rel in payload}
    for top in sorted(tops):
        entry = target / top
        if entry.is_symlink() and os.readlink(entry) == f"{DATA_LINK}/{top}":
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        entry.symlink_to(f"{DATA_LINK}/{top}")
    for entry in target.iterdir():
        if entry.name in (DATA_LINK, new.name):
            continue
        if entry.name.startswith("..") and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)  # a previous payload
        elif (entry.is_symlink() and entry.name not in tops
              and os.readlink(entry).startswith(DATA_LINK + "/")):
            entry.unlink()  # an entry the Secret no longer has
    return True


@dataclass
class Running:
    uid: str
    namespace: str
    name: str
    node: str
    ip: str
    argv: list[str]
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    log: str = ""
    history: list[int] = field(default_factory=list)
    cwd: Path | None = None  # set once started: where its volumes are written


class PodRunner:
    def __init__(self, core: Any, rig_dir: Path, selector: str = RUN_LOCAL_SELECTOR,
                 volume_refresh: float = VOLUME_REFRESH_S) -> None:
        self.core = core
        self.volume_refresh = volume_refresh  # seconds between volume refreshes; <= 0: never
        self.next_refresh = 0.0
        self.dir = rig_dir
        self.selector = selector
        self.log_dir = rig_dir / "logs" / "pods"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.work_dir = rig_dir / "pods"
        self.running: dict[str, Running] = {}
        self.stopping = False

    def _secret(self, namespace: str, name: str, key: str) -> str | None:
        """A Secret's value (as the kubelet would inject it); None if unreadable."""
        try:
            data = self.core.read_namespaced_secret(name, namespace, _request_timeout=10).data or {}
        except Exception as exc:  # noqa: BLE001 - a missing Secret leaves the variable unset
            log.warning("secret %s/%s: %s", namespace, name, exc)
            return None
        return base64.b64decode(data[key]).decode() if key in data else None

    def _secret_volumes(self, pod: dict[str, Any], cwd: Path,
                        cache: dict[tuple[str, str], dict[str, str] | None] | None = None) -> int:
        """Write the first container's mounted `secret` volumes under CWD (write_volume:
        only what changed, atomically); how many volumes changed. A Secret that cannot be
        read leaves its volume as it was (the process finds no files if it never was).
        CACHE shares one read of each Secret between the pods of one refresh round."""
        cache = {} if cache is None else cache
        ns = pod["metadata"]["namespace"]
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        changed = 0
        for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
            src = (volumes.get(mount.get("name")) or {}).get("secret")
            if not src:
                continue
            target = cwd / str(mount["mountPath"]).lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            key = (ns, src["secretName"])
            if key not in cache:
                try:
                    cache[key] = self.core.read_namespaced_secret(src["secretName"], ns,
                                                                  _request_timeout=10).data or {}
                except Exception as exc:  # noqa: BLE001 - a missing Secret: no files, or the old ones
                    log.warning("secret volume %s: %s", src["secretName"], exc)
                    cache[key] = None
            data = cache[key]
            if data is None:
                continue
            items = src.get("items") or [{"key": k, "path": k} for k in data]
            payload = {item["path"]: (base64.b64decode(data[item["key"]]),
                                      int(item.get("mode") or src.get("defaultMode") or 0o400))
                       for item in items if item["key"] in data}
            try:
                changed += write_volume(target, payload)
            except OSError as exc:
                log.warning("secret volume %s at %s: %s", src["secretName"], mount["mountPath"], exc)
        return changed

    def refresh_volumes(self, pods: dict[str, dict[str, Any]]) -> None:
        """What the kubelet's periodic sync does for running pods: their Secret volumes
        rewritten when the Secrets changed (PODS: by uid, as listed this round)."""
        cache: dict[tuple[str, str], dict[str, str] | None] = {}
        for uid, r in self.running.items():
            if r.cwd is None or r.popen is None or uid not in pods:
                continue
            if self._secret_volumes(pods[uid], r.cwd, cache):
                log.info("pod %s/%s: secret volume contents refreshed", r.namespace, r.name)

    def _service_account(self, pod: dict[str, Any], cwd: Path) -> str | None:
        """A kubeconfig with a pod-bound token of the pod's ServiceAccount (None: no token)."""
        spec, meta = pod["spec"], pod["metadata"]
        if spec.get("automountServiceAccountToken") is False:
            return None
        sa = spec.get("serviceAccountName") or "default"
        try:
            tr = self.core.create_namespaced_service_account_token(sa, meta["namespace"], {
                "spec": {"expirationSeconds": 3600,
                         "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"],
                                            "uid": meta["uid"]}}}, _request_timeout=10)
        except Exception as exc:  # noqa: BLE001 - the process runs without API credentials
            log.warning("token for %s/%s: %s", meta["namespace"], sa, exc)
            return None
        path = cwd / ".kube" / "config"
        write_token_kubeconfig(self.core.api_client.configuration, sa, meta["namespace"], tr.status.token, path)
        return str(path)

    # -- process control -----------------------------------------------------------------------
    def _start(self, r: Running, pod: dict[str, Any], node: dict[str, Any] | None) -> None:
        env = pod_env(pod, node, self._secret)
        c = pod["spec"]["containers"][0]
        argv = [pod_bind(expand(a, env), env["POD_IP"])
                for a in (c.get("command") or []) + (c.get("args") or [])]
        if not argv:
            log.error("pod %s/%s: first container has no command; nothing to run", r.namespace, r.name)
            r.next_start = float("inf")
            return
        cwd = Path(c.get("workingDir") or self.work_dir / r.namespace / r.name)
        cwd.mkdir(parents=True, exist_ok=True)
        r.cwd = cwd
        self._secret_volumes(pod, cwd)
        if kubeconfig := self._service_account(pod, cwd):
            env["KUBECONFIG"] = kubeconfig
        # Volume mounts become per-pod directories: an argument at or under a mountPath
        # (e.g. `--data /data`) is rewritten to the same path under the pod's directory.
        # The program itself and arguments naming existing host files are left alone: the
        # venv's `tidemark` may well live under a mounted path such as /tmp.
        # Each argument is rewritten once, by its longest mount path (a pod directory under
        # /tmp must not be rewritten again by a /tmp mount).
        mounts = sorted((str(m.get("mountPath", "")).rstrip("/") for m in c.get("volumeMounts") or []),
                        key=len, reverse=True)

        def local(a: str) -> str:
            for mp in mounts:
                if mp and (a == mp or a.startswith(mp + "/")) and not os.path.isfile(a):
                    return str(cwd / mp.lstrip("/")) + a[len(mp):]
            return a

        argv = argv[:1] + [local(a) for a in argv[1:]]
        logf = self.log_dir / f"{r.namespace}_{r.name}.log"
        r.log = str(logf)
        with logf.open("ab") as fh:
            fh.write(f"\n=== {time.ctime()} uid={r.uid} node={r.node} ip={r.ip} $ {argv}\n".encode())
            fh.flush()
            try:
                r.popen = subprocess.Popen(
                    argv, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_pdeathsig,
                )
            except OSError as exc:
                log.error("pod %s/%s: cannot start %s: %s", r.namespace, r.name, argv, exc)
                r.popen = None
                r.next_start = time.monotonic() + 5
                return
        r.argv = argv
        r.history.append(r.popen.pid)
        log.info("started pod %s/%s on %s ip=%s pid=%d: %s", r.namespace, r.name, r.node, r.ip,
                 r.popen.pid, argv)

    @staticmethod
    def _kill(r: Running, why: str) -> None:
        if r.popen is None:
            return
        pid = r.popen.pid
        for killer in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                killer(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            r.popen.wait(timeout=5)
        log.info("killed pod %s/%s pid=%d: %s", r.namespace, r.name, pid, why)
        r.popen = None

    def kill_all(self, why: str) -> None:
        for r in list(self.running.values()):
            self._kill(r, why)
        self.running.clear()
        self._save()

    def _save(self) -> None:
        state = {
            uid: {
                "namespace": r.namespace, "name": r.name, "node": r.node, "ip": r.ip,
                "pid": r.popen.pid if r.popen else None, "restarts": r.restarts,
                "argv": r.argv, "log": r.log,
            }
            for uid, r in self.running.items()
        }
        tmp = self.dir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, self.dir / STATE_FILE)

    # -- reconcile -----------------------------------------------------------------------------
    def reconcile_once(self) -> None:
        api = self.core.api_client
        nodes = {n["metadata"]["name"]: n for n in api.sanitize_for_serialization(
            self.core.list_node(_request_timeout=10)).get("items", [])}
        pods = api.sanitize_for_serialization(
            self.core.list_pod_for_all_namespaces(label_selector=self.selector, _request_timeout=10)
        ).get("items", [])
        wanted: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
        why_not: dict[str, str] = {}
        for pod in pods:
            uid = pod["metadata"]["uid"]
            node_name = pod["spec"].get("nodeName")
            status = pod.get("status") or {}
            node = nodes.get(node_name or "")
            if pod["metadata"].get("deletionTimestamp"):
                why_not[uid] = "pod is being deleted"
            elif node is None:
                why_not[uid] = f"node {node_name} is gone"
            elif not node_ready(node):
                why_not[uid] = f"node {node_name} is not Ready"
            elif status.get("phase") != "Running" or not status.get("podIP"):
                why_not[uid] = "pod is not Running with an IP"
            else:
                wanted[uid] = (pod, node)
        for uid in list(self.running):
            if uid not in wanted:
                self._kill(self.running.pop(uid), why_not.get(uid, "pod deleted"))
        now = time.monotonic()
        for uid, (pod, node) in wanted.items():
            r = self.running.get(uid)
            if r is None:
                meta = pod["metadata"]
                r = Running(uid, meta["namespace"], meta["name"], pod["spec"]["nodeName"],
                            pod["status"]["podIP"], [])
                self.running[uid] = r
                self._start(r, pod, node)
            elif r.popen is not None and r.popen.poll() is not None:
                code = r.popen.returncode
                r.popen = None
                if pod["spec"].get("restartPolicy", "Always") == "Always":
                    r.restarts += 1
                    r.next_start = now + min(10.0, 0.5 * 2 ** min(r.restarts, 5))
                    log.warning("pod %s/%s exited with %s; restart #%d soon", r.namespace, r.name,
                                code, r.restarts)
                else:
                    r.next_start = float("inf")
            elif r.popen is None and now >= r.next_start:
                self._start(r, pod, node)
        self._save()
        if self.volume_refresh > 0 and now >= self.next_refresh:
            self.next_refresh = now + self.volume_refresh
            self.refresh_volumes({uid: pod for uid, (pod, _node) in wanted.items()})

    def run(self, interval: float = 0.5) -> None:
        def stop(signum: int, _frame: Any) -> None:
            self.stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        log.info("pod runner watching pods with %s", self.selector)
        try:
            while not self.stopping:
                try:
                    self.reconcile_once()
                except Exception as exc:  # noqa: BLE001 - apiserver blips must not stop us
                    log.warning("reconcile failed: %r", exc)
                time.sleep(interval)
        finally:
            self.kill_all("pod runner stopping")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tidemark_rig.pod_runner")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--dir", required=True, type=Path)
    ap.add_argument("--selector", default=RUN_LOCAL_SELECTOR)
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--volume-refresh", type=float, default=VOLUME_REFRESH_S,
                    help="seconds between refreshes of running pods' Secret volumes (<= 0: never)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(asctime)s %(levelname)s %(message)s")
    from kubernetes import client, config

    core = client.CoreV1Api(config.new_client_from_config(config_file=args.kubeconfig))
    PodRunner(core, args.dir, args.selector, args.volume_refresh).run(args.interval)
    return 0


def read_state(rig_dir: Path) -> dict[str, dict[str, Any]]:
    """The runner's current processes, keyed by pod uid (for tests and the CLI)."""
    try:
        return json.loads((rig_dir / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    sys.exit(main())
