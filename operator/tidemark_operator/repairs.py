"""Segment repair as placement changes (pure): which PGs start replacing a lost segment
(membership epoch+1, dual member sets) and which finish (epoch+1, the new set only), from
the nodes' observed health and the targets' hydration progress. The executor in
reconcile.py writes the result with a compare-and-swap and drives the nodes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tidemark_protocol.quorum import Membership
from tidemark_protocol.repair import NodeHealth, RepairLimits, plan_repairs

from .placement import memberships

_DUR = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_QTY = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
        "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def parse_duration(s: str) -> float:
    parts = _DUR.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"bad duration {s!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def parse_quantity(s: str | int) -> int:
    if isinstance(s, int):
        return s
    # Kubernetes quantities: decimal k/M/G/T, binary Ki/Mi/Gi/Ti ("128Ki" was refused before)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|)", str(s))
    if not m:
        raise ValueError(f"bad quantity {s!r}")
    return int(float(m.group(1)) * _QTY[m.group(2)])


@dataclass(frozen=True)
class Change:
    pg: int
    kind: str  # "begin" | "finish" | "abort"
    lost: str
    target: str
    sources: tuple[str, ...] = ()


def hydration_state(status: Mapping[str, Any] | None, pg: int) -> str | None:
    for s in (status or {}).get("segments", []):
        if int(s["pg"]) == pg:
            return str((s.get("hydration") or {}).get("state", "idle"))
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
) -> tuple[dict[str, Any], list[Change], list[str]]:
    """(new placement document, changes made, reasons repairs wait)."""
    ms = memberships(doc)
    pgs = {k: dict(v) for k, v in doc["pgs"].items()}
    changes: list[Change] = []
    # finish: the new member's hydration is done
    for pg, m in ms.items():
        if m.next_members is None:
            continue
        new = [x for x in m.next_members if x not in m.members]
        old = [x for x in m.members if x not in m.next_members]
        if new and all(hydration_state(statuses.get(x), pg) == "done" for x in new):
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
    for a in plan.start:
        pgs[str(a.pg)] = current[a.pg].begin_replace(a.lost, a.target).to_json()
        changes.append(Change(a.pg, "begin", a.lost, a.target, a.sources))
    waits = [f"pg {w.pg} ({w.lost}): {w.reason}" for w in plan.waiting]
    return {**doc, "pgs": pgs}, changes, waits
