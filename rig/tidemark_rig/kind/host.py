"""Host kernel limits a ten-node kind cluster needs (kind's known issue: inotify).

Every kubelet, kube-proxy and containerd in the nodes shares the host's inotify limits;
Debian's default of 128 instances per user is exhausted by a few nodes ("too many open
files"). Limits are only ever raised, never lowered.
"""

from __future__ import annotations

from pathlib import Path

MINIMUMS = {
    "fs/inotify/max_user_instances": 8192,
    "fs/inotify/max_user_watches": 1048576,
}


def raise_limits(proc_sys: Path = Path("/proc/sys")) -> dict[str, int]:
    """Raise each limit below its minimum; return what was changed (name -> new value)."""
    changed = {}
    for name, minimum in MINIMUMS.items():
        path = proc_sys / name
        if int(path.read_text().split()[0]) < minimum:
            path.write_text(f"{minimum}\n")
            changed[name.replace("/", ".")] = minimum
    return changed
