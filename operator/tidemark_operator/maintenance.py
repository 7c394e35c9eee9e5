"""Maintenance mode of an AuroraCluster (pure): the annotation `tidemark.dev/maintenance:
"true"` pauses new segment rebuilds during planned node work, as Ceph's `noout` does: a
pod that is down on purpose is not "lost", so its segments are not copied elsewhere (a
rebuild costs bandwidth and a membership change for a pod that is coming back). Repairs
already running finish; the "lost since" clock keeps running, so a pod still gone when
maintenance ends is repaired on the next pass. `kubectl tidemark maintenance on|off`
sets and clears it."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .model import MAINTENANCE_ANNOTATION
from .status import condition

CONDITION = "Maintenance"

Event = Callable[[str, str, str], None]


def active(body: Mapping[str, Any]) -> bool:
    """The cluster is in maintenance: its annotation says "true"."""
    annotations = (body.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(MAINTENANCE_ANNOTATION, "")).strip().lower() == "true"


def was_active(old_conds: Sequence[Mapping[str, Any]]) -> bool:
    return any(c.get("type") == CONDITION and c.get("status") == "True" for c in old_conds)


def apply(status: dict[str, Any], on: bool, generation: int, old_conds: Sequence[Mapping[str, Any]],
          now: str, event: Event) -> None:
    """Add the Maintenance condition to STATUS, and an Event when it flips."""
    if on:
        reason, msg = "MaintenanceOn", (f"annotation {MAINTENANCE_ANNOTATION}=true: no new segment "
                                        "rebuilds start; running ones finish")
    else:
        reason, msg = "MaintenanceOff", "segment repairs run as usual"
    if on != was_active(old_conds) and (on or any(c.get("type") == CONDITION for c in old_conds)):
        event("Warning" if on else "Normal", reason, msg)
    conds = [c for c in status.get("conditions", []) if c["type"] != CONDITION]
    conds.append(condition(CONDITION, on, reason, msg, generation, old_conds, now))
    status["conditions"] = conds
