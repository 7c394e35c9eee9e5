"""The kind node image, assembled offline the way `kind build node-image` would.

Every image a node needs (the control plane's, etcd, coredns, kube-proxy, pause, the
pod network, local-path storage, and the MinIO and mc images `examples/minio.yaml`
names) is built locally from the cached binaries and preloaded into the node's
containerd under exactly the name kubeadm or the manifests ask for, so nothing is ever
pulled. The node image is tagged with a hash of all its
inputs: a warm `tidemark dev kind up` finds it in the engine and builds nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from .. import versions
from ..install_bins import go_env
from ..procs import RigError
from . import dockercmd, rootfs
from .node_bins import all_paths

PAUSE_TAGS = ("registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10")  # kubeadm's, containerd config's
KINDNET_IMAGE = "tidemark.local/kindnet:{key}"
LOCAL_PATH_IMAGE = f"tidemark.local/local-path-provisioner:{versions.LOCAL_PATH}"
LOCAL_PATH_HELPER = "tidemark.local/local-path-helper:{key}"
NODE_REPO = "tidemark.local/kind-node"
# The images examples/minio.yaml names (a user's cluster pulls them from quay.io). Here
# they are stand-ins built from the rig's pinned MinIO and mc sources (other builds than
# those tags, the same S3 API), so the example runs unchanged with no registry.
EXAMPLE_IMAGES = {"minio": "quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z",
                  "mc": "quay.io/minio/mc:RELEASE.2025-04-16T18-13-26Z"}

# Runs before kind's own entrypoint. In a container that is not --privileged (this
# machine cannot grant CAP_SYS_RESOURCE) cgroup v1 controller mounts are read-only;
# the kubelet must write them. Harmless on cgroup v2 (no such mounts).
NODE_ENTRYPOINT = """#!/bin/sh
if [ ! -f /sys/fs/cgroup/cgroup.controllers ]; then
  awk '$3 == "cgroup" {print $2}' /proc/self/mounts | while read -r m; do
    mount -o remount,bind,rw "$m" 2>/dev/null || true
  done
fi
exec /usr/local/bin/entrypoint "$@"
"""

CNI_MANIFEST = """# The pod network of Tidemark's offline kind clusters (kindnetd's stand-in).
apiVersion: v1
kind: ServiceAccount
metadata: {name: kindnet, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kindnet}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kindnet}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kindnet}
subjects: [{kind: ServiceAccount, name: kindnet, namespace: kube-system}]
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: kindnet
  namespace: kube-system
  labels: {app: kindnet, k8s-app: kindnet, tier: node}
spec:
  selector:
    matchLabels: {app: kindnet}
  template:
    metadata:
      labels: {app: kindnet, k8s-app: kindnet, tier: node}
    spec:
      hostNetwork: true
      dnsPolicy: Default
      priorityClassName: system-node-critical
      serviceAccountName: kindnet
      tolerations: [{operator: Exists}]
      containers:
      - name: kindnet
        image: IMAGE
        imagePullPolicy: Never
        env:
        - name: NODE_NAME
          valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        securityContext:
          capabilities: {add: [NET_ADMIN, NET_RAW]}
        resources:
          requests: {cpu: 10m, memory: 20Mi}
        volumeMounts:
        - {name: cni-cfg, mountPath: /etc/cni/net.d}
        - {name: kubelet-conf, mountPath: /etc/kubernetes/kubelet.conf, readOnly: true}
      volumes:
      - {name: cni-cfg, hostPath: {path: /etc/cni/net.d, type: DirectoryOrCreate}}
      - {name: kubelet-conf, hostPath: {path: /etc/kubernetes/kubelet.conf, type: File}}
"""

# What kind's base Dockerfile does after installing packages, minus the package step.
NODE_DOCKERFILE = """FROM {base}
COPY files/usr/local/bin/ /usr/local/bin/
COPY files/kind/ /kind/
COPY files/etc/ /etc/
COPY bin/ /usr/local/bin/
COPY cni/ /opt/cni/bin/
COPY kube/ /usr/bin/
COPY manifests/ /kind/manifests/
RUN chmod 755 /kind /kind/bin /kind/bin/* /usr/local/bin/* /opt/cni/bin/* /usr/bin/kubeadm /usr/bin/kubelet /usr/bin/kubectl \\
 && ln -sf /usr/sbin/runc /usr/local/sbin/runc \\
 && find /lib/systemd/system/sysinit.target.wants/ -name systemd-tmpfiles-setup.service -delete \\
 && rm -f /lib/systemd/system/multi-user.target.wants/* /etc/systemd/system/*.wants/* \\
          /lib/systemd/system/local-fs.target.wants/* /lib/systemd/system/sockets.target.wants/*udev* \\
          /lib/systemd/system/sockets.target.wants/*initctl* /lib/systemd/system/basic.target.wants/* \\
 && echo "ReadKMsg=no" >> /etc/systemd/journald.conf \\
 && ln -sf /usr/lib/systemd/systemd /sbin/init \\
 && systemctl enable kubelet.service containerd.service undo-mount-hacks.service \\
 && systemctl mask systemd-binfmt.service \\
 && mkdir -p /etc/kubernetes/manifests \\
 && sed -i 's/restrict_oom_score_adj = false/restrict_oom_score_adj = true/' /etc/containerd/config.toml \\
 && ctr oci spec | jq '.hooks.createContainer[.hooks.createContainer | length] |= . + {{"path": "/kind/bin/mount-product-files.sh"}}' \\
    | jq 'del(.process.rlimits)' > /etc/containerd/cri-base.json \\
 && echo {version} > /kind/version
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/tidemark-node-entrypoint", "/sbin/init"]
"""


def kind_module_dir(go: str) -> Path:
    """kind's module source (its base-image files and storage manifest), from the proxy."""
    done = subprocess.run([go, "mod", "download", "-json", f"sigs.k8s.io/kind@{versions.KIND}"],
                          capture_output=True, text=True, timeout=600, env=go_env())
    if done.returncode != 0:
        raise RigError(f"go mod download sigs.k8s.io/kind@{versions.KIND} failed: {done.stdout}{done.stderr}")
    return Path(json.loads(done.stdout)["Dir"])


def storage_manifest(kind_dir: Path, provisioner: str, helper: str) -> str:
    """kind's local-path manifest, with our locally built images in place of kind's.

    The Go constant is raw strings joined by `+` with the two image constants.
    """
    src = (kind_dir / "pkg/build/nodeimage/const_storage.go").read_text()
    names = {"storageProvisionerImage": provisioner, "storageHelperImage": helper}
    match = re.search(r"const defaultStorageManifest = ((?:`[^`]*`|\s*\+\s*\w+\s*\+\s*)+)", src)
    if match is None:
        raise RigError("kind's storage manifest not found in const_storage.go")
    parts = re.findall(r"`([^`]*)`|(\w+)", match.group(1))
    try:
        text = "".join(raw if raw else names[ident] for raw, ident in parts)
    except KeyError as exc:
        raise RigError(f"kind's storage manifest uses an unknown constant {exc}") from exc
    return text.replace("imagePullPolicy: IfNotPresent", "imagePullPolicy: Never")


class NodeImageBuilder:
    def __init__(self, work: Path, log_dir: Path, go: str, say: Callable[[str], None]) -> None:
        self.work = work
        self.log_dir = log_dir
        self.go = go
        self.say = say
        self.bins = all_paths()

    def _key(self, kind_dir: Path) -> str:
        h = hashlib.sha256()
        for name, path in sorted(self.bins.items()):
            h.update(f"{name}={path.name}\n".encode())
        for text in (NODE_ENTRYPOINT, CNI_MANIFEST, NODE_DOCKERFILE, rootfs.tag("node"), rootfs.tag("tools"),
                     str(sorted(PAUSE_TAGS)), versions.KIND, str(sorted(EXAMPLE_IMAGES.items())),
                     versions.MINIO, versions.MC):
            h.update(text.encode())
        return h.hexdigest()[:12]

    def tag(self, kind_dir: Path) -> str:
        return f"{NODE_REPO}:{versions.KUBERNETES}-{self._key(kind_dir)}"

    def _context(self, name: str, files: dict[str, Path], dockerfile: str) -> Path:
        ctx = self.work / "contexts" / name
        shutil.rmtree(ctx, ignore_errors=True)
        ctx.mkdir(parents=True)
        for rel, src in files.items():
            dest = ctx / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest)
        (ctx / "Dockerfile").write_text(dockerfile)
        return ctx

    def _images(self, key: str, tools: str, log: Path) -> dict[str, list[str]]:
        """Build the preloaded images; returns {local image tag: [every name it must have]}."""
        b = self.bins
        scratch = "FROM scratch\nENV PATH=/usr/local/bin:/usr/bin:/bin\n"
        specs: dict[str, tuple[dict[str, Path], str, list[str]]] = {}
        for comp in ("kube-apiserver", "kube-controller-manager", "kube-scheduler"):
            specs[comp] = ({comp: versions.bin_path(comp)}, f"{scratch}COPY {comp} /usr/local/bin/{comp}\n",
                           [f"registry.k8s.io/{comp}:{versions.KUBERNETES}"])
        specs["kube-proxy"] = ({"kube-proxy": b["kube-proxy"]},
                               f"FROM {tools}\nCOPY kube-proxy /usr/local/bin/kube-proxy\n",
                               [f"registry.k8s.io/kube-proxy:{versions.KUBERNETES}"])
        specs["etcd"] = ({"etcd": b["etcd-node"]}, f"{scratch}COPY etcd /usr/local/bin/etcd\n",
                         [f"registry.k8s.io/etcd:{versions.ETCD_NODE.removeprefix('v')}-0"])
        specs["coredns"] = ({"coredns": b["coredns"]},
                            'FROM scratch\nCOPY coredns /coredns\nENTRYPOINT ["/coredns"]\n',
                            [f"registry.k8s.io/coredns/coredns:{versions.COREDNS}"])
        specs["pause"] = ({"pause": b["pause"]}, 'FROM scratch\nCOPY pause /pause\nENTRYPOINT ["/pause"]\n',
                          list(PAUSE_TAGS))
        specs["kindnet"] = ({"tidemark-kindnet": b["tidemark-kindnet"]},
                            f"FROM {tools}\nCOPY tidemark-kindnet /usr/local/bin/tidemark-kindnet\n"
                            'ENTRYPOINT ["/usr/local/bin/tidemark-kindnet"]\n',
                            [KINDNET_IMAGE.format(key=key)])
        specs["local-path-provisioner"] = (
            {"local-path-provisioner": b["local-path-provisioner"]},
            f"{scratch}COPY local-path-provisioner /usr/bin/local-path-provisioner\n", [LOCAL_PATH_IMAGE])
        specs["local-path-helper"] = ({}, f"FROM {tools}\n", [LOCAL_PATH_HELPER.format(key=key)])
        # HOME in /tmp: MinIO keeps its certs directory there; the example runs as uid 1000.
        specs["minio"] = ({"minio": versions.bin_path("minio")},
                          f"FROM {tools}\nCOPY minio /usr/bin/minio\nENV HOME=/tmp\n"
                          'ENTRYPOINT ["/usr/bin/minio"]\n', [EXAMPLE_IMAGES["minio"]])
        specs["mc"] = ({"mc": versions.bin_path("mc")}, f"FROM {tools}\nCOPY mc /usr/bin/mc\nENV HOME=/tmp\n"
                       'ENTRYPOINT ["/usr/bin/mc"]\n', [EXAMPLE_IMAGES["mc"]])
        images: dict[str, list[str]] = {}
        for name, (files, dockerfile, names) in specs.items():
            local = f"tidemark-kind/{name}:{key}"
            if not dockercmd.image_exists(local):
                dockercmd.build(self._context(name, files, dockerfile), local, log)
            for extra in names:
                dockercmd.run(["tag", local, extra], log)
            images[local] = names
        return images

    def _node_base(self, key: str, node_base: str, kind_dir: Path, log: Path) -> str:
        b = self.bins
        files: dict[str, Path] = {}
        base_files = kind_dir / "images/base/files"
        for src in base_files.rglob("*"):
            if src.is_file():
                files[f"files/{src.relative_to(base_files)}"] = src
        for name in ("containerd", "ctr", "containerd-shim-runc-v2", "crictl"):
            files[f"bin/{name}"] = b[name]
        for name in ("host-local", "loopback", "ptp", "portmap"):
            files[f"cni/{name}"] = b[name]
        for name in ("kubeadm", "kubelet", "kubectl"):
            files[f"kube/{name}"] = b[name]
        ctx = self._context("node", files, NODE_DOCKERFILE.format(base=node_base, version=versions.KUBERNETES))
        (ctx / "bin/tidemark-node-entrypoint").write_text(NODE_ENTRYPOINT)
        (ctx / "manifests").mkdir()
        (ctx / "manifests/default-cni.yaml").write_text(CNI_MANIFEST.replace("IMAGE", KINDNET_IMAGE.format(key=key)))
        (ctx / "manifests/default-storage.yaml").write_text(
            storage_manifest(kind_dir, LOCAL_PATH_IMAGE, LOCAL_PATH_HELPER.format(key=key)))
        local = f"tidemark-kind/node-base:{key}"
        dockercmd.build(ctx, local, log)
        return local

    def ensure(self) -> str:
        kind_dir = kind_module_dir(self.go)
        key = self._key(kind_dir)
        final = self.tag(kind_dir)
        if dockercmd.image_exists(final):
            self.say(f"node image {final}: cached")
            return final
        log = self.log_dir / "node-image.log"
        log.write_text(f"# node image {final} started {time.ctime()}\n")
        start = time.monotonic()
        self.say(f"debootstrap: node and tools bases (Debian {versions.DEBIAN_SUITE})")
        node_base = rootfs.ensure("node", self.work, log)
        tools = rootfs.ensure("tools", self.work, log)
        self.say("building the preloaded images")
        images = self._images(key, tools, log)
        self.say("building the node base")
        base = self._node_base(key, node_base, kind_dir, log)
        self.say("preloading images into the node's containerd")
        commit_with_images(base, list(images.values()), final, f"tidemark-node-build-{key}", log)
        self.say(f"node image {final} built in {time.monotonic() - start:.0f}s")
        return final


def commit_with_images(base: str, images: list[list[str]], final: str, container: str, log: Path) -> None:
    """Image FINAL: BASE with IMAGES (each a list of the names one image must have) in its
    containerd, imported as `kind build node-image` does (not unpacked, pinned)."""
    subprocess.run([dockercmd.docker(), "rm", "-f", container], capture_output=True, timeout=60)
    dockercmd.run(["run", "-d", "--init", "--name", container, "--entrypoint", "sleep",
                   "--security-opt", "seccomp=unconfined", "--network", "none", base, "infinity"], log)
    try:
        dockercmd.run(["exec", container, "bash", "-c",
                       "nohup containerd > /var/log/containerd-build.log 2>&1 &"], log)
        deadline = time.monotonic() + 60
        while subprocess.run([dockercmd.docker(), "exec", container, "ctr", "version"],
                             capture_output=True, timeout=30).returncode != 0:
            if time.monotonic() > deadline:
                raise RigError(f"containerd in the build container did not start; log: {log}")
            time.sleep(0.5)
        for names in images:
            dockercmd.pipe_save_into(names, container,
                                     ["ctr", "-n", "k8s.io", "images", "import", "--all-platforms",
                                      "--no-unpack", "--digests", "--label=io.cri-containerd.pinned=pinned",
                                      "-"], log)
        dockercmd.run(["exec", container, "ctr", "-n", "k8s.io", "images", "ls", "-q"], log)
        dockercmd.run(["exec", container, "bash", "-c",
                       "pkill containerd; for i in $(seq 100); do pgrep containerd >/dev/null || exit 0; "
                       "sleep 0.1; done; exit 1"], log)
        dockercmd.run(["commit",
                       "--change", 'ENTRYPOINT ["/usr/local/bin/tidemark-node-entrypoint", "/sbin/init"]',
                       "--change", 'ENV HTTP_PROXY="" HTTPS_PROXY="" NO_PROXY=""',
                       container, final], log, timeout=900)
    finally:
        subprocess.run([dockercmd.docker(), "rm", "-f", "-v", container], capture_output=True, timeout=120)


def with_app(node_image: str, app: str, log: Path, say: Callable[[str], None]) -> str:
    """The node image with the Tidemark image APP preloaded, tagged by both: a new cluster's
    ten nodes start holding it, instead of `kind load` importing it into each worker in
    turn (1.5-2 min of a cold `kind up` on two cores). Older ones of ours are removed."""
    app_id = dockercmd.image_id(app)
    if app_id is None:
        raise RigError(f"no image {app} to preload")
    final = f"{node_image}-app-{app_id.removeprefix('sha256:')[:12]}"
    if dockercmd.image_exists(final):
        say(f"node image with {app}: cached")
        return final
    start = time.monotonic()
    commit_with_images(node_image, [[app]], final, "tidemark-node-app-build", log)
    for old in dockercmd.tags_like(f"{node_image}-app-"):
        if old != final:
            dockercmd.remove_tag(old, log)
    say(f"node image with {app} preloaded in {time.monotonic() - start:.0f}s")
    return final
