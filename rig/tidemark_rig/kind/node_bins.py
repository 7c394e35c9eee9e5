"""Build the programs of an offline kind node image into the cache, like the rig's binaries.

kind's own `build node-image` fetches images from registries; here every program in
the node, and in the images it preloads, is built from the Go module proxy at a pinned
version (`versions.NODE_PROGRAMS`), plus two of our own: the pod-network daemon
(`kindnet/main.go`, cached under a hash of its source) and Kubernetes' `pause`,
compiled statically from the Kubernetes module's `pause.c`. Cached builds are a stat.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from .. import versions
from ..install_bins import Installer, InstallError, find_go, go_env, kube_ldflags
from ..versions import NODE_PROGRAMS, bin_dir, node_bin_path

KINDNET_SRC = Path(__file__).with_name("kindnet")
KUBE_NODE_CMDS = ("kubelet", "kubeadm", "kubectl", "kube-proxy")
GROUPS: dict[str, tuple[str, ...]] = {
    "kubernetes-node": KUBE_NODE_CMDS,
    "etcd-node": ("etcd-node",),
    "containerd": ("containerd", "ctr", "containerd-shim-runc-v2"),
    "cni-plugins": ("host-local", "loopback", "ptp", "portmap"),
    "crictl": ("crictl",),
    "coredns": ("coredns",),
    "local-path-provisioner": ("local-path-provisioner",),
    "kind": ("kind",),
}
# containerd's own build tags for a node: no snapshotters that need C libraries.
CONTAINERD_TAGS = "no_aufs no_zfs no_btrfs no_devmapper"


def kindnet_path() -> Path:
    digest = hashlib.sha256((KINDNET_SRC / "main.go").read_bytes()).hexdigest()[:12]
    return bin_dir() / f"tidemark-kindnet-{digest}"


def pause_path() -> Path:
    return bin_dir() / f"pause-{versions.KUBERNETES}"


def all_paths() -> dict[str, Path]:
    paths = {n: node_bin_path(n) for n in NODE_PROGRAMS}
    paths["tidemark-kindnet"] = kindnet_path()
    paths["pause"] = pause_path()
    return paths


class NodeBinaries:
    def __init__(self, installer: Installer) -> None:
        self.inst = installer

    def _log(self, group: str) -> Path:
        log = self.inst.log_root / f"{group}.log"
        log.write_text(f"# {group} build started {time.ctime()}\n")
        return log

    def _go_install(self, group: str, log: Path, tags: str = "") -> None:
        names = GROUPS[group]
        progs = [NODE_PROGRAMS[n] for n in names]
        work = self.inst.build_root / f"{group}-{progs[0].version}"
        gobin = work / "gobin"
        gobin.mkdir(parents=True, exist_ok=True)
        args = ["env", f"GOBIN={gobin}", self.inst.go, "install", "-trimpath", "-ldflags", "-s -w"]
        if tags:
            args += ["-tags", tags]
        args += [f"{p.package}@{p.version}" for p in progs]
        self.inst.run_step(f"{group}: go install", args, work, log, 3600)
        for p in progs:
            self._publish(gobin / Path(p.package).name, p.name)

    def _publish(self, built: Path, name: str) -> None:
        if not built.exists():
            raise InstallError(f"step '{name}: locate binary': {built} was not produced")
        Installer.publish_to(built, node_bin_path(name))

    def _kubernetes_node(self, log: Path) -> None:
        # Same throw-away module and replaces as the rig's control plane: shared packages
        # come from Go's build cache instead of compiling twice.
        mods = self.inst.staging_modules(log)
        work = self.inst.build_root / f"kubernetes-node-{versions.KUBERNETES}"
        pkgs = [NODE_PROGRAMS[c].package for c in KUBE_NODE_CMDS]
        self.inst.throwaway_module(work, "kubenodebuild", f"k8s.io/kubernetes {versions.KUBERNETES}", pkgs,
                                   [(m, f"{m} {versions.KUBERNETES_STAGING}") for m in mods])
        self.inst.run_step("kubernetes-node: go mod tidy", [self.inst.go, "mod", "tidy"], work, log, 1800)
        self.inst.run_step("kubernetes-node: go build kubelet kubeadm kubectl kube-proxy",
                           [self.inst.go, "build", "-trimpath", "-ldflags", kube_ldflags(), "-o", "out/", *pkgs],
                           work, log, 5400)
        for c in KUBE_NODE_CMDS:
            self._publish(work / "out" / c, c)

    def _etcd_node(self, log: Path) -> None:
        # etcd 3.6's server module has no main package of its own: wrap etcdmain.Main.
        prog = NODE_PROGRAMS["etcd-node"]
        work = self.inst.build_root / f"etcd-node-{prog.version}"
        work.mkdir(parents=True, exist_ok=True)
        (work / "go.mod").write_text(
            f"module tidemark.local/etcdnode\n\ngo 1.26.0\n\nrequire {prog.module} {prog.version}\n")
        (work / "main.go").write_text(
            'package main\n\nimport (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
            "func main() { etcdmain.Main(os.Args) }\n")
        self.inst.run_step("etcd-node: go mod tidy", [self.inst.go, "mod", "tidy"], work, log, 900)
        self.inst.run_step("etcd-node: go build",
                           [self.inst.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", "out/etcd", "."],
                           work, log, 1800)
        self._publish(work / "out" / "etcd", "etcd-node")

    def _kindnet(self, log: Path) -> None:
        dest = kindnet_path()
        out = self.inst.build_root / "tidemark-kindnet" / "tidemark-kindnet"
        out.parent.mkdir(parents=True, exist_ok=True)
        self.inst.run_step("tidemark-kindnet: go build",
                           [self.inst.go, "build", "-trimpath", "-ldflags", "-s -w", "-o", str(out), "."],
                           KINDNET_SRC, log, 600)
        Installer.publish_to(out, dest)

    def _pause(self, log: Path) -> None:
        gomodcache = subprocess.run([self.inst.go, "env", "GOMODCACHE"], capture_output=True, text=True,
                                    env=go_env(), check=True).stdout.strip()
        src = Path(gomodcache) / f"k8s.io/kubernetes@{versions.KUBERNETES}/build/pause/linux/pause.c"
        if not src.exists():
            self.inst.staging_modules(log)  # downloads the Kubernetes module
        gcc = shutil.which("gcc")
        if gcc is None:
            raise InstallError("step 'pause: find gcc': no gcc on PATH (apt-get install gcc libc6-dev)")
        out = self.inst.build_root / "pause" / "pause"
        out.parent.mkdir(parents=True, exist_ok=True)
        version = f'-DVERSION="{versions.KUBERNETES}"'
        self.inst.run_step("pause: gcc -static", [gcc, "-Os", "-static", version, "-o", str(out), str(src)],
                           out.parent, log, 300)
        Installer.publish_to(out, pause_path())

    def build(self, group: str, log: Path) -> None:
        if group == "kubernetes-node":
            self._kubernetes_node(log)
        elif group == "etcd-node":
            self._etcd_node(log)
        elif group == "containerd":
            self._go_install(group, log, CONTAINERD_TAGS)
        elif group == "tidemark-kindnet":
            self._kindnet(log)
        elif group == "pause":
            self._pause(log)
        else:
            self._go_install(group, log)

    def install(self) -> dict[str, Path]:
        """Build whatever is missing; returns every program's path by name."""
        paths = all_paths()
        wanted = {**{g: [node_bin_path(n) for n in names] for g, names in GROUPS.items()},
                  "tidemark-kindnet": [kindnet_path()], "pause": [pause_path()]}
        bin_dir().mkdir(parents=True, exist_ok=True)
        self.inst.log_root.mkdir(parents=True, exist_ok=True)
        self.inst.build_root.mkdir(parents=True, exist_ok=True)
        with self.inst.lock():
            for i, (group, outs) in enumerate(wanted.items(), 1):
                head = f"[{i}/{len(wanted)}] {group}"
                if all(os.access(p, os.X_OK) for p in outs):
                    self.inst.console.print(f"{head}: [green]cached[/]")
                    continue
                if not self.inst.go:
                    self.inst.go = find_go()
                log = self._log(group)
                self.inst.console.print(f"{head}: building (log: {log})")
                start = time.monotonic()
                self.build(group, log)
                self.inst.console.print(f"{head}: [green]done[/] in {time.monotonic() - start:.0f}s")
        return paths
