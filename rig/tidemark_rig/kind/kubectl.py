"""kubectl and helm against a kind cluster, with the pinned binaries from the cache."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..versions import bin_path
from . import logged
from .node_bins import all_paths

# The chart install of docs/kind.md, word for word (a unit test holds the two together).
HELM_INSTALL = ("upgrade --install tidemark charts/tidemark --namespace tidemark-system --create-namespace "
                "--set operator.watchAllNamespaces=true --wait --timeout 5m")


def kubectl_bin() -> str:
    return str(all_paths()["kubectl"])


def helm_bin() -> str:
    return str(bin_path("helm"))


def run(tool: str, args: list[str], kubeconfig: Path, log: Path, timeout: float = 300,
        stdin: str | None = None, cwd: Path | None = None) -> str:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return logged.run([tool, *args], log, timeout, env=env, cwd=cwd, stdin=stdin)


def kubectl_json(args: list[str], kubeconfig: Path, log: Path) -> Any:
    return json.loads(run(kubectl_bin(), [*args, "-o", "json"], kubeconfig, log))


def no_external_dns(kubeconfig: Path, log: Path) -> bool:
    """Drop CoreDNS's `forward` to the node's resolver: a pod's lookup of a name outside
    the cluster would otherwise be sent off this machine. Returns True if it changed."""
    cm = kubectl_json(["-n", "kube-system", "get", "configmap", "coredns"], kubeconfig, log)
    corefile = cm["data"]["Corefile"]
    stripped = re.sub(r"\n\s*forward \. /etc/resolv\.conf(?: \{[^}]*\})?", "", corefile)
    if stripped == corefile:
        return False
    cm["data"]["Corefile"] = stripped
    run(kubectl_bin(), ["replace", "-f", "-"], kubeconfig, log, stdin=json.dumps(cm))
    return True


def helm_install(repo: Path, kubeconfig: Path, log: Path) -> None:
    run(helm_bin(), HELM_INSTALL.split(), kubeconfig, log, timeout=420, cwd=repo)


def restart_operator(kubeconfig: Path, log: Path) -> None:
    deploy = ["-n", "tidemark-system", "deploy/tidemark-operator"]
    run(kubectl_bin(), ["rollout", "restart", *deploy], kubeconfig, log)
    run(kubectl_bin(), ["rollout", "status", *deploy, "--timeout=180s"], kubeconfig, log, timeout=200)
