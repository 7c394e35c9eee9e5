"""Placement of PG segments onto storage nodes: 2 per zone in 3 zones, distinct nodes,
spread evenly. Pure and deterministic so the operator and the playground agree."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

SEGMENTS_PER_ZONE = 2
ZONES = 3


class PlacementError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class NodeInfo:
    name: str
    zone: str


def zones_of(nodes: Sequence[NodeInfo]) -> dict[str, list[str]]:
    zones: dict[str, list[str]] = {}
    for node in nodes:
        zones.setdefault(node.zone, []).append(node.name)
    return {z: sorted(ns) for z, ns in sorted(zones.items())}


def validate_topology(nodes: Sequence[NodeInfo]) -> dict[str, list[str]]:
    zones = zones_of(nodes)
    if len(zones) != ZONES:
        raise PlacementError(f"need exactly {ZONES} zones, found {len(zones)}: {sorted(zones)}")
    short = {z: len(ns) for z, ns in zones.items() if len(ns) < SEGMENTS_PER_ZONE}
    if short:
        raise PlacementError(
            f"each zone needs at least {SEGMENTS_PER_ZONE} nodes; short zones: {short}"
        )
    return zones


def place(
    pg_ids: Sequence[int],
    nodes: Sequence[NodeInfo],
    existing: Mapping[int, Sequence[str]] | None = None,
) -> dict[int, tuple[str, ...]]:
    """Members for each PG; PGs already in `existing` keep their members.

    New PGs go to the least-loaded nodes of each zone (ties by name), so segments spread
    evenly and adding PGs later keeps the spread.
    """
    zones = validate_topology(nodes)
    existing = dict(existing or {})
    load = {n.name: 0 for n in nodes}
    for members in existing.values():
        for m in members:
            if m in load:
                load[m] += 1
    placement: dict[int, tuple[str, ...]] = {}
    for pg in sorted(pg_ids):
        if pg in existing:
            placement[pg] = tuple(existing[pg])
            continue
        members: list[str] = []
        for _zone, names in zones.items():
            chosen = sorted(names, key=lambda n: (load[n], n))[:SEGMENTS_PER_ZONE]
            for n in chosen:
                load[n] += 1
            members.extend(chosen)
        placement[pg] = tuple(members)
    return placement
