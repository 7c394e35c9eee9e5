"""Stock kind on a machine that cannot run `docker run --privileged`.

Some VMs' capability bounding set lacks CAP_SYS_RESOURCE (bit 24), and runc then
refuses every privileged container, kind's nodes included. A `docker` wrapper first on
kind's PATH swaps `--privileged` for every capability but that one plus the device
and path access a node needs, and drops it from `docker exec`. kind itself runs
unmodified; on a machine that has the capability no wrapper is used.
"""

from __future__ import annotations

from pathlib import Path

CAP_SYS_RESOURCE = 24
WRAPPER = """#!/bin/bash
# Written by `tidemark dev kind`: this machine cannot grant CAP_SYS_RESOURCE, so
# `--privileged` (which asks for it) becomes every other capability and device access.
real={real}
args=()
sub=""
for a in "$@"; do
  if [ -z "$sub" ] && [[ "$a" != -* ]]; then sub="$a"; fi
  if [ "$a" = "--privileged" ]; then
    case "$sub" in
      run|create)
        args+=(--cap-add=ALL --cap-drop=SYS_RESOURCE --security-opt=systempaths=unconfined
               "--device-cgroup-rule=a *:* rwm" --device=/dev/kmsg --device=/dev/fuse)
        continue;;
      exec) continue;;
    esac
  fi
  args+=("$a")
done
exec "$real" "${{args[@]}}"
"""


def bounding_set(status: Path = Path("/proc/self/status")) -> int:
    for line in status.read_text().splitlines():
        if line.startswith("CapBnd:"):
            return int(line.split()[1], 16)
    raise RuntimeError("no CapBnd line in /proc/self/status")


def privileged_works() -> bool:
    return bool(bounding_set() >> CAP_SYS_RESOURCE & 1)


def wrapper_dir(bin_root: Path, real_docker: str) -> Path | None:
    """The directory to put first on kind's PATH, or None when stock docker works."""
    if privileged_works():
        return None
    bin_root.mkdir(parents=True, exist_ok=True)
    wrapper = bin_root / "docker"
    text = WRAPPER.format(real=real_docker)
    if not wrapper.exists() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    return bin_root
