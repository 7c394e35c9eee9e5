"""What a writer needs to know about a volume: layout, nodes and PG memberships."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership


@dataclass(slots=True)
class Topology:
    layout: VolumeLayout
    nodes: dict[str, str]  # node name -> base URL
    memberships: dict[int, Membership]
    volume_epoch: int = 0  # the last epoch a writer sealed the volume with

    def pgs_of(self, node: str) -> list[int]:
        return [pg for pg, m in self.memberships.items() if node in m.all_members]

    def to_json(self) -> dict:
        return {
            "layout": self.layout.to_json(),
            "nodes": dict(self.nodes),
            "memberships": {str(pg): m.to_json() for pg, m in self.memberships.items()},
            "volume_epoch": self.volume_epoch,
        }

    @classmethod
    def from_json(cls, data: dict) -> Topology:
        return cls(
            VolumeLayout.from_json(data["layout"]),
            dict(data["nodes"]),
            {int(pg): Membership.from_json(m) for pg, m in data["memberships"].items()},
            int(data.get("volume_epoch", 0)),
        )


TOPOLOGY_FILE = "topology.json"


def load_topology(directory: Path) -> Topology:
    path = directory / TOPOLOGY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start a fleet with `tidemark playground up`")
    return Topology.from_json(json.loads(path.read_text()))


@contextmanager
def topology_lock(directory: Path) -> Iterator[None]:
    """Serializes read-modify-write of topology.json across processes (the writer
    records its epoch, the supervisor records membership changes)."""
    with (directory / (TOPOLOGY_FILE + ".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_volume_epoch(directory: Path, epoch: int) -> None:
    """Store the writer's new volume epoch without touching anything else."""
    with topology_lock(directory):
        topology = load_topology(directory)
        topology.volume_epoch = max(topology.volume_epoch, epoch)
        save_topology(directory, topology)


def save_topology(directory: Path, topology: Topology) -> None:
    """Atomic replace, so a crash never leaves a half-written topology behind."""
    path = directory / TOPOLOGY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(topology.to_json(), indent=2))
    os.replace(tmp, path)


def membership_source(directory: Path) -> Callable[[], Awaitable[Topology]]:
    """A Writer's view of the placement kept in `directory` (the playground's)."""

    async def load() -> Topology:
        return load_topology(directory)

    return load
