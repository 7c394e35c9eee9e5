"""Pinned versions of every program the rig runs, and where they live in the cache.

Binaries live OUTSIDE the repo, in ``$TIDEMARK_CACHE`` (default
``${XDG_CACHE_HOME:-~/.cache}/tidemark``) under ``bin/NAME-VERSION``; ``bin/current/NAME``
is a symlink to the pinned one, a stable path for people and scripts.

All versions build with Go 1.26 and ``GOTOOLCHAIN=local`` (checked: each module's go
directive is <= 1.26.0).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

KUBERNETES = "v1.36.3"
# Published staging modules (k8s.io/api, k8s.io/apiserver, ...) carry v0.Y.Z for v1.Y.Z.
KUBERNETES_STAGING = "v0." + KUBERNETES.removeprefix("v1.")
# kube-apiserver 1.36 wants etcd >= 3.5; Debian's etcd-server is 3.4.23, so we build 3.5.
ETCD = "v3.5.35"
KWOK = "v0.8.0"
HELM = "v3.22.0"
# Prometheus' Go module carries v0.3XX.Y for Prometheus v3.XX.Y (3.16.0); only promtool
# is built, and only on request (OPTIONAL_PROGRAMS).
PROMETHEUS = "v0.316.0"
PROMETHEUS_RELEASE = "3.16.0"
# MinIO and mc publish RELEASE.* tags that are not semver, so Go sees pseudo-versions.
MINIO = "v0.0.0-20260212201848-7aac2a2c5b7c"
MC = "v0.0.0-20250313080218-cf909e1063a9"


@dataclass(frozen=True)
class Program:
    name: str
    version: str
    module: str  # Go module the binary is built from
    package: str  # Go package path of the main package


PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        Program("etcd", ETCD, "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3"),
        Program(
            "kube-apiserver", KUBERNETES, "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-apiserver"
        ),
        Program(
            "kube-controller-manager",
            KUBERNETES,
            "k8s.io/kubernetes",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
        ),
        Program(
            "kube-scheduler", KUBERNETES, "k8s.io/kubernetes", "k8s.io/kubernetes/cmd/kube-scheduler"
        ),
        Program("kwok", KWOK, "sigs.k8s.io/kwok", "sigs.k8s.io/kwok/cmd/kwok"),
        Program("minio", MINIO, "github.com/minio/minio", "github.com/minio/minio"),
        Program("mc", MC, "github.com/minio/mc", "github.com/minio/mc"),
        Program("helm", HELM, "helm.sh/helm/v3", "helm.sh/helm/v3/cmd/helm"),
    )
}


# Built only when named (`tidemark dev install-bins --only promtool`); tests that use one
# skip without it, and missing_binaries() never lists them.
OPTIONAL_PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        Program("promtool", PROMETHEUS, "github.com/prometheus/prometheus",
                "github.com/prometheus/prometheus/cmd/promtool"),
    )
}


def program(name: str) -> Program:
    """A pinned program of the rig, required or optional."""
    return PROGRAMS[name] if name in PROGRAMS else OPTIONAL_PROGRAMS[name]


def cache_root() -> Path:
    if env := os.environ.get("TIDEMARK_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "tidemark"


def bin_dir() -> Path:
    return cache_root() / "bin"


def bin_path(name: str) -> Path:
    """Path of the pinned binary NAME (it may not be built yet)."""
    prog = program(name)
    return bin_dir() / f"{prog.name}-{prog.version}"


def missing_binaries() -> list[str]:
    return [n for n in PROGRAMS if not os.access(bin_path(n), os.X_OK)]


# -- the offline kind path (`tidemark dev kind`) --------------------------------------------
# Versions measured to work together on this kind of machine (../shared/design/kind-offline.md).
KIND = "v0.33.0"
ETCD_NODE = "v3.6.8"  # kubeadm 1.36 passes --feature-gates to etcd, which 3.5 rejects
CONTAINERD = "v2.3.4"
CNI_PLUGINS = "v1.9.1"
CRICTL = "v1.36.0"
COREDNS = "v1.14.2"
LOCAL_PATH = "v0.0.30"
DEBIAN_SUITE = "bookworm"  # the node and image base, from debootstrap (Debian's mirror as apt has it)

NODE_PROGRAMS: dict[str, Program] = {
    p.name: p
    for p in (
        *(Program(c, KUBERNETES, "k8s.io/kubernetes", f"k8s.io/kubernetes/cmd/{c}")
          for c in ("kubelet", "kubeadm", "kubectl", "kube-proxy")),
        Program("etcd-node", ETCD_NODE, "go.etcd.io/etcd/server/v3", "go.etcd.io/etcd/server/v3/etcdmain"),
        *(Program(c, CONTAINERD, "github.com/containerd/containerd/v2",
                  f"github.com/containerd/containerd/v2/cmd/{c}")
          for c in ("containerd", "ctr", "containerd-shim-runc-v2")),
        *(Program(p.rsplit("/", 1)[1], CNI_PLUGINS, "github.com/containernetworking/plugins",
                  f"github.com/containernetworking/plugins/plugins/{p}")
          for p in ("ipam/host-local", "main/loopback", "main/ptp", "meta/portmap")),
        Program("crictl", CRICTL, "sigs.k8s.io/cri-tools", "sigs.k8s.io/cri-tools/cmd/crictl"),
        Program("coredns", COREDNS, "github.com/coredns/coredns", "github.com/coredns/coredns"),
        Program("local-path-provisioner", LOCAL_PATH, "github.com/rancher/local-path-provisioner",
                "github.com/rancher/local-path-provisioner"),
        Program("kind", KIND, "sigs.k8s.io/kind", "sigs.k8s.io/kind"),
    )
}


def node_bin_path(name: str) -> Path:
    prog = NODE_PROGRAMS[name]
    return bin_dir() / f"{prog.name}-{prog.version}"
