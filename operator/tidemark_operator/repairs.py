"""Segment repair as placement changes (pure): which PGs start replacing a lost segment
(membership epoch+1, dual member sets) and which finish (epoch+1, the new set only), from
the nodes' observed health and the targets' hydration progress. The executor in
repair_executor.py writes the result with a compare-and-swap and drives the nodes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.utils import parse_quantity as k8s_quantity

from tidemark_protocol.hydration import HydrationState
from tidemark_protocol.quorum import Membership
from tidemark_protocol.repair import NodeHealth, RepairLimits, plan_repairs

from .placement import memberships
from .spec import Repair

PAUSED = "new segment rebuilds paused (maintenance)"

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")


def parse_duration(s: str) -> float:
    parts = _DUR.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"bad duration {s!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_quantity(s: str | int) -> int:
    """A Kubernetes quantity in whole units: 50Mi, 128Ki, 2G, 1500 (kubernetes.utils);
    anything else (e.g. '50MB') is refused."""
    if isinstance(s, int):
        return s
    try:
        return math.ceil(k8s_quantity(s))  # whole units, rounded up (as Kubernetes does)
    except ValueError as exc:
        raise ValueError(f"bad quantity {s!r}: expected a Kubernetes quantity such as 50Mi, "
                         "128Ki or 2G") from exc


def repair_limits(repair: Repair) -> RepairLimits:
    """spec.repair as the planner's limits."""
    return RepairLimits(node_loss_timeout=parse_duration(repair.node_loss_timeout),
                        max_concurrent=repair.max_concurrent_rebuilds,
                        bandwidth_bytes_per_s=parse_quantity(repair.rebuild_bandwidth))


@dataclass(frozen=True)
class Change:
    pg: int
    kind: str  # "begin" | "finish" | "abort"
    lost: str
    target: str
    sources: tuple[str, ...] = ()


def hydration_state(status: Mapping[str, Any] | None, pg: int) -> HydrationState | None:
    for s in (status or {}).get("segments", []):
        if int(s["pg"]) == pg:
            return HydrationState((s.get("hydration") or {}).get("state", "idle"))
    return None


def _lost(pod: str, unhealthy_since: Mapping[str, float], now: float, limits: RepairLimits) -> bool:
    since = unhealthy_since.get(pod)
    return since is not None and now - since >= limits.node_loss_timeout


def plan_changes(
    doc: Mapping[str, Any],
    zone_of: Mapping[str, str],
    statuses: Mapping[str, Mapping[str, Any] | None],
    unhealthy_since: Mapping[str, float],
    now: float,
    limits: RepairLimits,
    paused: bool = False,
) -> tuple[dict[str, Any], list[Change], list[str]]:
    """(new placement document, changes made, reasons repairs wait). PAUSED (maintenance):
    no replacement begins; running ones still finish or step back."""
    ms = memberships(doc)
    pgs = {k: dict(v) for k, v in doc["pgs"].items()}
    changes: list[Change] = []
    # finish: the new member's hydration is done
    for pg, m in ms.items():
        if m.next_members is None:
            continue
        new = [x for x in m.next_members if x not in m.members]
        old = [x for x in m.members if x not in m.next_members]
        if new and all(hydration_state(statuses.get(x), pg) == HydrationState.DONE for x in new):
            pgs[str(pg)] = m.finish_replace().to_json()
            changes.append(Change(pg, "finish", old[0] if old else "", new[0]))
        elif any(_lost(x, unhealthy_since, now, limits) for x in new):
            # The rebuild's own target is lost too: step back to the old set (its data is
            # still there) so the replacement can start over on another pod, instead of
            # waiting in a dual membership for a pod that may never return. Its half-built
            # segment is dropped by drop_orphans if it does come back.
            pgs[str(pg)] = m.abort_replace().to_json()
            changes.append(Change(pg, "abort", old[0] if old else "", new[0]))
    # begin: lost members (unhealthy for nodeLossTimeout) move to a healthy pod of the zone
    nodes = {p: NodeHealth(p, z, statuses.get(p) is not None, unhealthy_since.get(p))
             for p, z in zone_of.items()}
    current = {pg: Membership.from_json(pgs[str(pg)]) for pg in ms}
    plan = plan_repairs(current, nodes, now, limits)
    for a in [] if paused else plan.start:
        pgs[str(a.pg)] = current[a.pg].begin_replace(a.lost, a.target).to_json()
        changes.append(Change(a.pg, "begin", a.lost, a.target, a.sources))
    waits = ([f"pg {w.pg} ({w.lost}): {PAUSED}" for w in [*plan.start, *plan.waiting]] if paused
             else [f"pg {w.pg} ({w.lost}): {w.reason}" for w in plan.waiting])
    return {**doc, "pgs": pgs}, changes, waits
