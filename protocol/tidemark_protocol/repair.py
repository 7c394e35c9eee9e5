"""Repair planning (pure): which lost segments to rebuild where, now.

A segment is lost when its node has been unhealthy for at least the wait-before-
rebuild (a node that restarts quickly keeps its segments: rebuilding is expensive).
Each lost segment is rebuilt on a healthy node of the same zone that holds no other
segment of the PG, preferring the least-loaded target, so two PGs of one lost node
land on different targets and rebuild in parallel. Sources are spread over the PG's
healthy members. Concurrency is capped globally and per target node. When a zone has
no eligible node the repair waits and says why: we keep 2 segments per zone rather than
degrade placement across zones (see docs/architecture.md, "Repair").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

from .quorum import WRITE_QUORUM, Membership


@dataclass(frozen=True, slots=True)
class NodeHealth:
    name: str
    zone: str
    healthy: bool
    unhealthy_since: float | None = None  # caller's clock, seconds
    capacity: int = 1_000_000  # max segments the node may hold


@dataclass(frozen=True, slots=True)
class RepairLimits:
    node_loss_timeout: float = 30.0
    max_concurrent: int = 4
    max_per_target: int = 2
    bandwidth_bytes_per_s: int = 0  # 0: unlimited; applied by the hydrating node


@dataclass(frozen=True, slots=True)
class RepairAction:
    pg: int
    lost: str
    target: str
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RepairWait:
    pg: int
    lost: str
    reason: str


@dataclass(slots=True)
class RepairPlan:
    start: list[RepairAction] = field(default_factory=list)
    waiting: list[RepairWait] = field(default_factory=list)


def lost_nodes(nodes: Mapping[str, NodeHealth], now: float, timeout: float) -> set[str]:
    return {
        n.name
        for n in nodes.values()
        if not n.healthy and n.unhealthy_since is not None and now - n.unhealthy_since >= timeout
    }


def plan_repairs(
    memberships: Mapping[int, Membership],
    nodes: Mapping[str, NodeHealth],
    now: float,
    limits: RepairLimits,
) -> RepairPlan:
    plan = RepairPlan()
    lost = lost_nodes(nodes, now, limits.node_loss_timeout)
    load: Counter[str] = Counter()
    in_progress_targets: Counter[str] = Counter()
    for m in memberships.values():
        load.update(m.all_members)
        if m.next_members is not None:
            in_progress_targets.update(set(m.next_members) - set(m.members))
    running = sum(in_progress_targets.values())
    source_use: Counter[str] = Counter()
    for pg in sorted(memberships):
        m = memberships[pg]
        if m.next_members is not None:
            continue  # one membership change per PG at a time
        for member in m.members:
            if member not in lost:
                continue
            zone = nodes[member].zone if member in nodes else None
            healthy_members = [s for s in m.members if s in nodes and nodes[s].healthy]
            if len(healthy_members) < WRITE_QUORUM:
                # A membership change must be recorded in a write quorum: without one
                # the PG is not writable anyway, and the lost nodes may well return.
                plan.waiting.append(
                    RepairWait(pg, member, f"pg {pg} has {len(healthy_members)} healthy segments, below the write quorum")
                )
                break
            if running >= limits.max_concurrent:
                plan.waiting.append(RepairWait(pg, member, "concurrency limit reached"))
                continue
            eligible = [
                n
                for n in nodes.values()
                if n.zone == zone
                and n.healthy
                and n.name not in m.all_members
                and load[n.name] < n.capacity
                and in_progress_targets[n.name] < limits.max_per_target
            ]
            if not eligible:
                plan.waiting.append(
                    RepairWait(pg, member, f"no healthy node in zone {zone} without a segment of pg {pg}")
                )
                continue
            target = min(eligible, key=lambda n: (in_progress_targets[n.name], load[n.name], n.name))
            sources = tuple(sorted(healthy_members, key=lambda s: (source_use[s], s)))
            source_use.update(sources[:2])
            plan.start.append(RepairAction(pg, member, target.name, sources))
            load[target.name] += 1
            in_progress_targets[target.name] += 1
            running += 1
            break  # the PG now has a change in progress
    return plan
