"""Create, find and delete kind clusters with the cached `kind` binary.

The docker network `kind` is created here, before kind runs, so the egress guard is in
place before the first node starts (kind reuses an existing network of that name).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..procs import RigError
from ..versions import cache_root
from . import dockercmd, logged
from .engine import docker
from .node_bins import all_paths
from .privileged import wrapper_dir

NETWORK = "kind"
SUBNET = "172.18.0.0/16"


def state_dir(name: str) -> Path:
    return cache_root() / "kind" / name


def kubeconfig_path(name: str) -> Path:
    return state_dir(name) / "kubeconfig"


def kind_env() -> dict[str, str]:
    env = dict(os.environ)
    env["KIND_EXPERIMENTAL_PROVIDER"] = "docker"
    wrap = wrapper_dir(cache_root() / "kind" / "bin", docker())
    if wrap is not None:
        env["PATH"] = f"{wrap}:{env.get('PATH', '')}"
    return env


def kind_bin() -> str:
    path = all_paths()["kind"]
    if not os.access(path, os.X_OK):
        raise RigError(f"kind is not built yet ({path}); run `tidemark dev kind up`")
    return str(path)


def _kind(args: list[str], log: Path, timeout: float) -> str:
    return logged.run([kind_bin(), *args], log, timeout, env=kind_env())


def clusters(log: Path) -> list[str]:
    return [line for line in _kind(["get", "clusters"], log, 60).splitlines() if line.strip()]


def ensure_network(log: Path) -> None:
    done = subprocess.run([docker(), "network", "inspect", NETWORK], capture_output=True, timeout=60)
    if done.returncode != 0:
        dockercmd.run(["network", "create", "--driver", "bridge", "--subnet", SUBNET, NETWORK], log)


def create(name: str, config: Path, image: str, log: Path) -> Path:
    kubeconfig = kubeconfig_path(name)
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    _kind(["create", "cluster", "--name", name, "--config", str(config), "--image", image,
           "--kubeconfig", str(kubeconfig), "--wait", "180s"], log, 900)
    kubeconfig.chmod(0o600)
    return kubeconfig


def delete(name: str, log: Path) -> None:
    _kind(["delete", "cluster", "--name", name, "--kubeconfig", str(kubeconfig_path(name))], log, 300)
    kubeconfig_path(name).unlink(missing_ok=True)


def load_image(name: str, image: str, log: Path) -> None:
    # Workers only: nothing of ours runs on the (tainted) control plane, and each node
    # costs an import of the whole image on this machine's two cores.
    workers = [n for n in nodes(name, log) if not n.endswith("-control-plane")]
    _kind(["load", "docker-image", image, "--name", name, "--nodes", ",".join(workers)], log, 900)


def nodes(name: str, log: Path) -> list[str]:
    return [n for n in _kind(["get", "nodes", "--name", name], log, 60).splitlines() if n.strip()]
