"""Carry out the repair plan (repairs.plan_changes): write each begin/finish/abort of a
segment replacement to the placement by compare-and-swap (blocking: run in a thread),
and start or restart the new members' hydration (async: node calls)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tidemark_protocol.hydration import HydrationState

from . import maintenance, placement_store
from . import placement as pl
from . import repair_resume as resume
from .kube import Kube
from .nodeclient import NodeClient, NodeError
from .repairs import Change, hydration_state, plan_changes, repair_limits
from .spec import ClusterSpec
from .state import ClusterState
from .status import PodObs
from .steps import AFTER_REPAIR_BEGIN, AFTER_REPAIR_FINISH, step

Event = Callable[[str, str, str], None]


def run_repairs(kube: Kube, state: ClusterState, body: Mapping[str, Any], spec: ClusterSpec,
                doc: dict[str, Any], statuses: Mapping[str, Mapping[str, Any] | None],
                event: Event) -> tuple[dict[str, Any], list[str]]:
    """Begin/finish segment replacements (placement CAS). Returns (placement, what is in
    progress or waiting, for the status). placement.Conflict if the placement changed
    since it was read."""
    now = time.monotonic()
    since = state.unhealthy_since
    zone_of = {p: z for z, ps in doc.get("zones", {}).items() for p in ps}
    for p in zone_of:
        if statuses.get(p) is None:
            since.setdefault(p, now)
        else:
            since.pop(p, None)
    limits = repair_limits(spec.repair)
    paused = maintenance.active(body)  # planned node work: no new rebuilds (maintenance.py)
    made: list[Change] = []
    waits: list[str] = []

    def update(cur: dict[str, Any] | None) -> dict[str, Any] | None:
        if cur is None:
            return None
        new, changes, w = plan_changes(cur, zone_of, statuses, since, now, limits, paused)
        made[:] = changes
        waits[:] = w
        return new if changes else None

    # A repair in the placement that this process did not begin is the previous
    # operator's: say that it is picked up (every step below is derived from the
    # placement and the nodes' status, so it simply continues).
    resume.note_found(state.known_repairs, pl.memberships(doc), statuses, event)
    new_doc, changed = placement_store.swap(kube, body, update, create=False)
    doc = new_doc if changed and new_doc is not None else doc
    if changed:
        dual = pl.memberships(doc)
        state.known_repairs.update({c.pg: dual[c.pg].epoch for c in made if c.kind == "begin"})
        if any(c.kind == "begin" for c in made):
            step(AFTER_REPAIR_BEGIN)
        if any(c.kind == "finish" for c in made):
            step(AFTER_REPAIR_FINISH)
    for c in made if changed else []:
        if c.kind == "begin":
            event("Warning", "RepairStarted", f"pg {c.pg}: replacing lost segment on {c.lost} by {c.target}")
        elif c.kind == "abort":
            event("Warning", "RepairAborted", f"pg {c.pg}: rebuild target {c.target} lost too; "
                  f"back to the old members, the replacement of {c.lost} starts over")
        else:
            event("Normal", "RepairFinished", f"pg {c.pg}: {c.target} replaced {c.lost}")
    progress = [f"pg {pg}: {'+'.join(set(m.next_members or ()) - set(m.members))} replacing "
                f"{'+'.join(set(m.members) - set(m.next_members or ()))}"
                for pg, m in pl.memberships(doc).items() if m.next_members is not None]
    return doc, progress + waits


async def drive_hydration(nodes: NodeClient, doc: Mapping[str, Any], pods: Sequence[PodObs],
                          statuses: Mapping[str, Mapping[str, Any] | None], bandwidth: int,
                          event: Event) -> None:
    """Start (or restart after a failure) the rebuild of each new member's segment."""
    urls = {p.name: p.url for p in pods if statuses.get(p.name) is not None}
    for pg, m in pl.memberships(doc).items():
        if m.next_members is None:
            continue
        sources = {s: urls[s] for s in m.members if s in urls and s in m.next_members}
        for new in set(m.next_members) - set(m.members):
            state = hydration_state(statuses.get(new), pg)
            if new not in urls or state not in (HydrationState.IDLE, HydrationState.FAILED) or not sources:
                continue
            try:
                await nodes.hydrate(urls[new], pg, sources, bandwidth)
            except NodeError as exc:
                event("Warning", "HydrateFailed", f"pg {pg} on {new}: {exc}")
                continue
            event("Normal", "Hydrating", f"pg {pg}: {new} rebuilding from {', '.join(sorted(sources))}")
