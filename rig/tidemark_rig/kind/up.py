"""`tidemark dev kind up|down`: every step from a bare machine to the chart installed.

Each step prints its name and time; a failed step names itself and its log. The order
matters for the network rule: the egress guard is in place before any container,
image build or kind node runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ..install_bins import Installer, InstallError, find_go
from ..procs import RigError
from ..versions import cache_root
from . import app_image, cluster, dockercmd, egress, engine, host, kubectl, nodeimage, rootfs
from .node_bins import NodeBinaries

DEFAULT_NAME = "tidemark"


class StepFailed(RuntimeError):
    """One step of `kind up` failed; the message names the step and its log."""


@dataclass
class Steps:
    console: Console
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[Callable[[str], None]]:
        n = len(self.timings) + 1
        self.console.print(f"[bold][{n}][/] {name} …")
        start = time.monotonic()
        try:
            yield lambda detail: self.console.print(f"      {detail}")
        except (RigError, InstallError) as exc:
            raise StepFailed(f"step '{name}' failed after {time.monotonic() - start:.0f}s: {exc}") from exc
        self.timings[name] = round(time.monotonic() - start, 1)
        self.console.print(f"    [green]✓[/] {name} ({self.timings[name]:.0f}s)")


def up(name: str, repo: Path, console: Console, image_tag: str | None = None) -> dict[str, object]:
    logs = cache_root() / "logs" / "kind"
    logs.mkdir(parents=True, exist_ok=True)
    steps = Steps(console)
    start = time.monotonic()
    with steps.step("docker engine") as say:
        engine.ensure_packages(logs / "apt.log")
        say(f"engine: {engine.ensure_engine(logs)}")
    with steps.step("egress guard"):
        egress.install_guard()
    with steps.step("host limits") as say:
        changed = host.raise_limits()
        say(f"raised: {changed}" if changed else "already high enough")
    with steps.step("binaries (rig and node, pinned, cached)"):
        installer = Installer(console)
        installer.install()
        NodeBinaries(installer).install()
    with steps.step("node image") as say:
        image = nodeimage.NodeImageBuilder(cache_root() / "kind" / "work", logs, find_go(), say).ensure()
    tag = image_tag or f"tidemark:{app_image.package_version(repo)}"
    with steps.step(f"image {tag}") as say:
        before = dockercmd.image_id(tag)
        app_image.build_image(repo, rootfs.ensure("tools", cache_root() / "kind" / "work", logs / "app-image.log"),
                              tag, logs / "app-image.log")
        rebuilt = dockercmd.image_id(tag) != before
        if rebuilt and before is not None:
            dockercmd.remove_if_dangling(before, logs / "app-image.log")  # our previous build of this tag
        say("built from the Dockerfile" + ("" if rebuilt else " (unchanged)"))
    kubeconfig = cluster.kubeconfig_path(name)
    with steps.step(f"cluster {name}") as say:
        cluster.ensure_network(logs / "network.log")
        if name in cluster.clusters(logs / "kind.log") and kubeconfig.exists():
            say(f"exists: kept; loading {tag} into its workers")
            cluster.load_image(name, tag, logs / "kind-load.log")  # nodes holding it already are skipped
        else:
            # New nodes start with the image in their containerd: one import, not one per worker.
            image = nodeimage.with_app(image, tag, logs / "node-image.log", say)
            cluster.create(name, repo / "kind-config.yaml", image, logs / "kind.log")
        if kubectl.no_external_dns(kubeconfig, logs / "kubectl.log"):
            say("CoreDNS: no forwarding off this machine")
    with steps.step("chart (helm " + kubectl.HELM_INSTALL.split()[0] + ")") as say:
        kubectl.helm_install(repo, kubeconfig, logs / "helm.log")
        if rebuilt and before is not None:
            # Same tag, new content: the Deployment's template did not change, so roll it.
            kubectl.restart_operator(kubeconfig, logs / "helm.log")
            say("operator restarted on the new image")
    total = round(time.monotonic() - start, 1)
    console.print(f"cluster {name} ready in {total:.0f}s; export KUBECONFIG={kubeconfig}")
    return {"name": name, "kubeconfig": str(kubeconfig), "image": tag, "node_image": image,
            "seconds": total, "steps": steps.timings, "logs": str(logs)}


def down(name: str, stop_engine: bool) -> dict[str, object]:
    logs = cache_root() / "logs" / "kind"
    logs.mkdir(parents=True, exist_ok=True)
    deleted = False
    if engine.engine_answers() and name in cluster.clusters(logs / "kind.log"):
        cluster.delete(name, logs / "kind.log")
        deleted = True
    stopped = engine.stop_engine() if stop_engine else False
    return {"name": name, "deleted": deleted, "engine_stopped": stopped}
