"""Running the commands of docs/kind.md against the cluster `tidemark dev kind up` made."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tidemark_rig.kind.node_bins import all_paths

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


@dataclass
class Kind:
    name: str
    kubeconfig: Path
    up: dict[str, Any]
    bin_dir: Path  # holds `kubectl`, the pinned one, first on PATH as a user's would be

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": f"{self.bin_dir}:{os.environ['PATH']}"}

    def kubectl(self, *args: str, timeout: float = 120, check: bool = True) -> str:
        done = subprocess.run([str(all_paths()["kubectl"]), *args], capture_output=True, text=True,
                              timeout=timeout, env=self.env(), cwd=ROOT)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))

    def docker(self, *args: str, timeout: float = 120) -> str:
        done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout

    def pods(self, selector: str, namespace: str = "default") -> list[dict[str, Any]]:
        return list(self.json("get", "pods", "-n", namespace, "-l", selector)["items"])

    def node_of(self, selector: str, namespace: str = "default") -> set[str]:
        return {p["spec"].get("nodeName") for p in self.pods(selector, namespace) if p["spec"].get("nodeName")}

    def workers_by_zone(self) -> dict[str, list[str]]:
        zones: dict[str, list[str]] = {}
        for node in self.json("get", "nodes")["items"]:
            zone = node["metadata"]["labels"].get("topology.kubernetes.io/zone")
            if zone:
                zones.setdefault(zone, []).append(node["metadata"]["name"])
        return zones

    def ac(self, name: str = "demo") -> dict[str, Any]:
        return dict(self.json("get", "ac", name))

    def events(self, reason: str) -> list[dict[str, Any]]:
        items = self.json("get", "events", "--field-selector", f"reason={reason}")["items"]
        return list(items)

    def diagnose(self, cluster: str) -> None:
        """On a failure: what a user would look at, on stderr (pods, status, logs)."""
        for args in (("get", "pods", "-o", "wide"), ("get", "ac", cluster, "-o", "jsonpath={.status}"),
                     ("get", "events", "--sort-by=.lastTimestamp"),
                     ("logs", "-n", "tidemark-system", "deploy/tidemark-operator", "--tail=80"),
                     ("logs", f"deploy/{cluster}-writer", "--tail=60"),
                     ("logs", f"deploy/{cluster}-replica", "--tail=30")):
            out = self.kubectl(*args, check=False, timeout=30)
            sys.stderr.write(f"\n$ kubectl {' '.join(args)}\n{out[-6000:]}\n")

    @contextlib.contextmanager
    def port_forward(self, target: str, listen_timeout: float = 30) -> Iterator[int]:
        """`kubectl port-forward TARGET LOCAL:5432`, as a user runs it; yields the local port.
        kubectl listens only once its stream to the pod's kubelet is up: a pod on a dead
        node keeps it waiting (LISTEN_TIMEOUT, then AssertionError)."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen([str(all_paths()["kubectl"]), "port-forward", "--address", "127.0.0.1", target,
                                 f"{port}:5432"], env=self.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + listen_timeout
            while True:
                with socket.socket() as s:
                    if s.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    raise AssertionError(f"kubectl port-forward {target} did not listen: "
                                         f"{proc.communicate(timeout=10)[1].strip()[-500:]}")
                time.sleep(0.3)
            yield port
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.communicate(timeout=10)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def wait_for(pred: Callable[[], T], timeout: float, what: str, interval: float = 3.0) -> T:
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if result := pred():
                return result
        except (AssertionError, subprocess.TimeoutExpired, KeyError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last: {last})" if last else ""))


def condition(ac: dict[str, Any], kind: str) -> str | None:
    for c in ac.get("status", {}).get("conditions", []):
        if c["type"] == kind:
            return str(c["status"])
    return None


def segments_full(ac: dict[str, Any]) -> bool:
    segs = ac.get("status", {}).get("segments", {})
    return bool(segs) and all(int(n) == 6 for n in segs.values())


def psql(port: int, password: str, sql: str, timeout: float = 30, connect_timeout: int = 10,
         verify: tuple[str, Path] | None = None) -> str:
    """One psql command as a user types it: the app user, ON_ERROR_STOP, unaligned output.
    VERIFY (host name, CA file): sslmode=verify-full for that name through the port-forward
    (libpq's hostaddr dials 127.0.0.1, the certificate is checked against the name)."""
    target = f"postgresql://tidemark@127.0.0.1:{port}/tidemark"
    if verify is not None:
        target = (f"host={verify[0]} hostaddr=127.0.0.1 port={port} user=tidemark dbname=tidemark "
                  f"sslmode=verify-full sslrootcert={verify[1]}")
    done = subprocess.run(["psql", target, "-v", "ON_ERROR_STOP=1",
                           "-tAc", sql], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": str(connect_timeout)})
    if done.returncode != 0:
        raise AssertionError(f"psql {sql!r}: {done.stderr.strip()}")
    return done.stdout.strip()
