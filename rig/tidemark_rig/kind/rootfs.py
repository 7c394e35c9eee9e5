"""Debian base images made with debootstrap and `docker import`: no registry needed.

Two bases: `node` (what kind's own base image installs: systemd, iptables, …) for the
kind node image, and `tools` (a small Debian with iptables, iproute2 and Python) for
kube-proxy, the pod-network daemon, local-path's helper and the Tidemark image. Each is
tagged with a hash of its suite and package list, so a changed list builds a new one
and an unchanged one is never rebuilt while the engine keeps its images.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from .. import versions
from ..procs import RigError
from . import dockercmd

PACKAGES: dict[str, tuple[str, ...]] = {
    "node": ("systemd", "systemd-sysv", "dbus", "conntrack", "iptables", "nftables", "iproute2",
             "ethtool", "util-linux", "mount", "kmod", "libseccomp2", "pigz", "bash",
             "ca-certificates", "procps", "runc", "socat", "jq", "e2fsprogs", "fuse-overlayfs"),
    "tools": ("iptables", "iproute2", "ca-certificates", "procps", "python3", "python3-venv"),
}
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def tag(name: str) -> str:
    key = hashlib.sha256(f"{versions.DEBIAN_SUITE} {PACKAGES[name]}".encode()).hexdigest()[:10]
    return f"tidemark-kind/{name}-base:{versions.DEBIAN_SUITE}-{key}"


def apt_mirror() -> str:
    """The Debian mirror apt is configured with (the one this machine may reach)."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for line in path.read_text().splitlines():
            if line.startswith("URIs:") and "security" not in line:
                return line.split()[1]
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        match = re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", sources.read_text(), re.M)
        if match and "security" not in match.group(1):
            return match.group(1)
    return DEFAULT_MIRROR


def ensure(name: str, work: Path, log: Path) -> str:
    """The base image NAME, built with debootstrap unless the engine has it."""
    image = tag(name)
    if dockercmd.image_exists(image):
        return image
    if shutil.which("debootstrap") is None:
        raise RigError("debootstrap not found (apt-get install debootstrap)")
    work.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"rootfs-{name}-", dir=work) as tmp:
        root = Path(tmp) / "root"
        with log.open("a") as fh:
            cmd = ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES[name])}",
                   versions.DEBIAN_SUITE, str(root), apt_mirror()]
            fh.write(f"\n$ {' '.join(cmd)}\n")
            fh.flush()
            done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
        if done.returncode != 0:
            raise RigError(f"debootstrap of the {name} base failed; log: {log}")
        # Package caches are not part of an image.
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / junk, ignore_errors=True)
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        try:
            dockercmd.run(["import", "-", image], log, timeout=900, stdin=tar.stdout.fileno() if tar.stdout else None)
        finally:
            if tar.stdout:
                tar.stdout.close()
            tar.wait(timeout=60)
    return image
