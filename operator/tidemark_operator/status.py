"""Status of an AuroraCluster from what was observed (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tidemark_protocol.hydration import HydrationState
from tidemark_protocol.quorum import SEGMENTS_PER_PG, WRITE_QUORUM

from .model import NODE_PORT
from .placement import memberships


@dataclass(frozen=True)
class PodObs:
    name: str
    zone: str
    ip: str | None
    running: bool
    tls: bool = True  # it serves https (a pod made before node TLS: http until it rolls)

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.ip}:{NODE_PORT}"


def condition(type_: str, status: bool, reason: str, message: str, generation: int,
              old: Sequence[Mapping[str, Any]], now: str) -> dict[str, Any]:
    s = "True" if status else "False"
    prev = next((c for c in old if c.get("type") == type_), None)
    since = prev["lastTransitionTime"] if prev and prev.get("status") == s else now
    return {"type": type_, "status": s, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": since}


def healthy_segments(doc: Mapping[str, Any], node_status: Mapping[str, Mapping[str, Any] | None]) -> dict[int, int]:
    """PG -> number of its members whose node answers and holds the segment."""
    held: dict[str, set[int]] = {}
    for pod, st in node_status.items():
        if st is not None:
            held[pod] = {int(s["pg"]) for s in st.get("segments", [])}
    return {pg: sum(1 for m in ms.members if pg in held.get(m, set()))
            for pg, ms in memberships(doc).items()}


def caught_up_segments(doc: Mapping[str, Any], node_status: Mapping[str, Mapping[str, Any] | None],
                       max_lag: int = 5000) -> dict[int, int]:
    """PG -> members whose copy is complete and current: no holes, not hydrating, and
    SCL within MAX_LAG LSNs of the PG's best copy (a restarted node that missed records
    has holes until gossip fills them; acks count only contiguous records)."""
    segs: dict[tuple[str, int], Mapping[str, Any]] = {}
    for pod, st in node_status.items():
        for s in (st or {}).get("segments", []):
            segs[(pod, int(s["pg"]))] = s
    out = {}
    for pg, ms in memberships(doc).items():
        copies = [segs.get((m, pg)) for m in ms.members]
        best = max((int(c.get("scl", 0)) for c in copies if c), default=0)
        out[pg] = sum(
            1 for c in copies
            if c is not None and not c.get("holes")
            and (c.get("hydration") or {}).get("state", "idle") in (HydrationState.IDLE, HydrationState.DONE)
            and int(c.get("scl", 0)) >= best - max_lag)
    return out


def repairs_in_flight(doc: Mapping[str, Any],
                      node_status: Mapping[str, Mapping[str, Any] | None]) -> list[dict[str, Any]]:
    """status.repairs: each PG mid-replacement (dual membership), with the new member's
    rebuild progress as its node reports it (`kubectl tidemark status` shows them)."""
    out = []
    for pg, ms in sorted(memberships(doc).items()):
        if ms.next_members is None:
            continue
        for new in sorted(set(ms.next_members) - set(ms.members)):
            seg = next((s for s in (node_status.get(new) or {}).get("segments", [])
                        if int(s["pg"]) == pg), None)
            h = (seg or {}).get("hydration") or {}
            out.append({"pg": pg, "from": "+".join(sorted(set(ms.members) - set(ms.next_members))),
                        "to": new, "epoch": ms.epoch, "state": str(h.get("state", "pending")),
                        "pct": float(h.get("pct") or 0.0), "bytes": int(h.get("bytes") or 0),
                        "totalBytes": int(h.get("total_bytes") or 0)})
    return out


def compute_status(
    generation: int,
    zones: Sequence[str] | None,
    doc: Mapping[str, Any] | None,
    pods: Sequence[PodObs],
    node_status: Mapping[str, Mapping[str, Any] | None],
    old: Mapping[str, Any] | None,
    now: str,
    blocked: tuple[str, str] | None = None,
    progressing: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The status subresource. `blocked` = (reason, message) when the spec cannot be
    satisfied (nothing is built); `progressing` = (reason, message) while the operator is
    still creating or changing things."""
    old = old or {}
    old_conds = old.get("conditions") or []
    planned = sum(len(v) for v in (doc or {}).get("zones", {}).values()) if doc else 0
    up = sum(1 for p in pods if node_status.get(p.name) is not None)
    st: dict[str, Any] = {"observedGeneration": generation, "zones": list(zones or []),
                          "readyNodes": f"{up}/{planned}"}
    if blocked is not None:
        reason, msg = blocked
        st.update({
            "phase": "Blocked", "healthyPGs": "0/0", "vdl": int(old.get("vdl", 0) or 0),
            "conditions": [
                condition("Ready", False, reason, msg, generation, old_conds, now),
                condition("Progressing", False, reason, msg, generation, old_conds, now),
                condition("Degraded", True, reason, msg, generation, old_conds, now),
            ],
        })
        return st
    healthy = healthy_segments(doc, node_status) if doc else {}
    full = sum(1 for n in healthy.values() if n == SEGMENTS_PER_PG)
    writable = sum(1 for n in healthy.values() if n >= WRITE_QUORUM)
    total = len(healthy)
    vdls = [int(s.get("vdl_hint", 0)) for st_ in node_status.values() if st_ is not None
            for s in st_.get("segments", [])]
    vdl = max([*vdls, int(old.get("vdl", 0) or 0)])
    st.update({
        "healthyPGs": f"{full}/{total}",
        "writablePGs": writable,
        "segments": {str(pg): n for pg, n in sorted(healthy.items())},
        "vdl": vdl,
    })
    if doc and (repairs := repairs_in_flight(doc, node_status)):
        st["repairs"] = repairs
    if doc and (down := sorted(p for ps in doc.get("zones", {}).values() for p in ps
                               if node_status.get(p) is None)):
        st["nodesDown"] = down  # the placement's pods not answering /v1/status this pass
    # Ready = every PG writable. While first being built (not Ready yet) any progress
    # keeps it False; once Ready, repairs, rollouts and spec changes do not flip it.
    was_ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in old_conds)
    ready = total > 0 and writable == total and (progressing is None or was_ready)
    if total == 0:
        r_reason, r_msg = "Creating", "placement not created yet"
    elif writable < total:
        r_reason = "WriteQuorumLost"
        r_msg = f"{total - writable} PG(s) below the write quorum of {WRITE_QUORUM}/{SEGMENTS_PER_PG}"
    elif progressing is not None and not was_ready:
        r_reason, r_msg = progressing
    else:
        r_reason, r_msg = "QuorumAvailable", f"all {total} PGs have a write quorum"
    degraded = full < total
    d_msg = (f"{total - full} PG(s) below {SEGMENTS_PER_PG} healthy segments; {up}/{planned} nodes up"
             if degraded else "all segments healthy")
    p_reason, p_msg = progressing or ("Reconciled", "desired state reached")
    st["phase"] = "Ready" if ready and not degraded else ("Degraded" if ready else "NotReady")
    st["conditions"] = [
        condition("Ready", ready, "QuorumAvailable" if ready else r_reason,
                  r_msg if not ready else (f"all {total} PGs writable" + ("" if not degraded else
                                                                          " (degraded)")),
                  generation, old_conds, now),
        condition("Progressing", progressing is not None, p_reason, p_msg, generation, old_conds, now),
        condition("Degraded", degraded, "SegmentsMissing" if degraded else "AllSegmentsHealthy",
                  d_msg, generation, old_conds, now),
    ]
    return st


# -- a restore cluster: status.restore and the Restored condition -----------------------------

RESTORE_DONE = "Done"


def restore_condition_fields(restore_status: Mapping[str, Any] | None) -> tuple[bool, str, str]:
    """(restored?, reason, message) for the Restored condition."""
    st = restore_status or {}
    phase = st.get("phase") or "Validating"
    if phase == RESTORE_DONE:
        return True, "RestoreComplete", (f"restored {st.get('pages', 0)} pages at LSN {st.get('lsn')} "
                                         f"({st.get('pointInTime')})")
    if phase == "Failed":
        return False, "RestoreFailed", str(st.get("message") or "restore failed")
    return False, phase, str(st.get("message") or phase.lower())


def apply_restore_status(status: dict[str, Any], restore_status: Mapping[str, Any], generation: int,
                         old_conds: list[Mapping[str, Any]], now: str) -> dict[str, Any]:
    """Overlay the restore on a computed cluster status: never Ready before the backup is
    fully loaded (phase Restoring/Failed), plus a Restored condition."""
    restored, reason, msg = restore_condition_fields(restore_status)
    conds = [c for c in status.get("conditions", []) if c["type"] != "Restored"]
    if not restored:
        conds = [c for c in conds if c["type"] != "Ready"]
        conds.insert(0, condition("Ready", False, "RestoreFailed" if reason == "RestoreFailed" else "Restoring",
                                  msg, generation, old_conds, now))
        status["phase"] = "Failed" if reason == "RestoreFailed" else "Restoring"
    conds.append(condition("Restored", restored, reason, msg, generation, old_conds, now))
    status["conditions"] = conds
    status["restore"] = dict(restore_status)
    return status


def progress_text(phase: str, done: int, total: int) -> str:
    """status.restore.progress of a load (restore_into's progress callback)."""
    what = {"inventory": "reading the backup's catalogue", "rebuild": "rebuilding PGs",
            "load": "loading pages"}.get(phase, phase)
    return f"{what}: {done}/{total}"
