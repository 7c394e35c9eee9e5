"""What a writer needs to know about a volume: layout, nodes and PG memberships."""

from __future__ import annotations

import json
import os
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


def save_topology(directory: Path, topology: Topology) -> None:
    """Atomic replace, so a crash never leaves a half-written topology behind."""
    path = directory / TOPOLOGY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(topology.to_json(), indent=2))
    os.replace(tmp, path)
