"""Running the commands of docs/kind.md against the cluster `tidemark dev kind up` made."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
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
