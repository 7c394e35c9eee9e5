"""`kubectl tidemark status`: one AuroraCluster as its operator reports it (status,
conditions, Events) joined with its pods and its placement ConfigMap. `summarize` is pure
(unit-tested); nothing here is computed that the operator does not publish, except the
join (which pod holds which PG, on which node)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tidemark_operator import placement as pl
from tidemark_operator.backup_health import CONDITION as BACKUP_HEALTHY
from tidemark_operator.maintenance import CONDITION as MAINTENANCE
from tidemark_operator.model import ZONE_POD_LABEL, placement_name, selector_labels
from tidemark_operator.refusals import CONDITION as RECONCILED
from tidemark_protocol.quorum import WRITE_QUORUM

from .kube_target import TIMEOUT, Target, event_time

EVENTS = 12  # most recent events shown by default


def condition_of(status: Mapping[str, Any], type_: str) -> Mapping[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def _pod_row(pod: Mapping[str, Any], pgs: Sequence[int], down: set[str]) -> dict[str, Any]:
    meta, spec, st = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in st.get("conditions") or [])
    restarts = sum(int(c.get("restartCount") or 0) for c in st.get("containerStatuses") or [])
    name = meta.get("name", "")
    return {"name": name, "zone": (meta.get("labels") or {}).get(ZONE_POD_LABEL, ""),
            "node": spec.get("nodeName"), "phase": st.get("phase"), "ready": ready,
            "answering": name not in down and st.get("phase") == "Running",
            "restarts": restarts, "ip": st.get("podIP"), "pgs": list(pgs)}


def _events(events: Sequence[Mapping[str, Any]], limit: int) -> list[dict[str, Any]]:
    return [{"type": e.get("type"), "reason": e.get("reason"), "object": e.get("object"),
             "message": " ".join(str(e.get("message") or "").split()), "count": e.get("count") or 1,
             "last_seen": e.get("last_seen")} for e in list(events)[-limit:]]


def problems_of(status: Mapping[str, Any], instances: Sequence[Mapping[str, Any]]) -> list[str]:
    """What keeps the cluster from being healthy, from its conditions and instances."""
    out = []
    ready, degraded = condition_of(status, "Ready"), condition_of(status, "Degraded")
    if ready.get("status") != "True":
        out.append(f"not Ready: {ready.get('reason', 'no status yet')}: {ready.get('message', '')}".rstrip(": "))
    if degraded.get("status") == "True":
        out.append(f"Degraded: {degraded.get('message', '')}")
    backup = condition_of(status, BACKUP_HEALTHY)
    if backup.get("status") == "False":
        out.append(f"backup not healthy: {backup.get('reason')}: {backup.get('message', '')}")
    reconciled = condition_of(status, RECONCILED)
    if reconciled.get("status") == "False":
        out.append(f"operator pass refused: {reconciled.get('reason')}: {reconciled.get('message', '')}")
    out += [f"instance {i['name']} ({i['role']}) not serving" for i in instances if not i.get("serving")]
    if status.get("instancesBlocked"):
        out.append(f"instances blocked: {status['instancesBlocked']}")
    return out


def summarize(ac: Mapping[str, Any], storage_pods: Sequence[Mapping[str, Any]],
              placement: Mapping[str, Any] | None, events: Sequence[Mapping[str, Any]],
              event_limit: int = EVENTS) -> dict[str, Any]:
    """The status summary (the `--json` document). AC: the AuroraCluster; STORAGE_PODS:
    its storage pods (plain dicts); PLACEMENT: the placement document (None: not made
    yet); EVENTS: plain {type, reason, object, message, count, last_seen}, oldest first."""
    meta, status = ac.get("metadata") or {}, ac.get("status") or {}
    ms = pl.memberships(placement) if placement else {}
    down = set(status.get("nodesDown") or [])
    pgs_of: dict[str, list[int]] = {}
    for pg, m in sorted(ms.items()):
        for member in sorted(set(m.members) | set(m.next_members or ())):
            pgs_of.setdefault(member, []).append(pg)
    healthy = {int(k): int(v) for k, v in (status.get("segments") or {}).items()}
    pgs = [{"id": pg, "healthy_segments": healthy.get(pg), "writable": healthy.get(pg, 0) >= WRITE_QUORUM,
            "epoch": m.epoch, "members": list(m.members),
            "next_members": list(m.next_members) if m.next_members is not None else None}
           for pg, m in sorted(ms.items())]
    repairs = [{"pg": r.get("pg"), "from": r.get("from"), "to": r.get("to"), "state": r.get("state"),
                "pct": r.get("pct"), "bytes": r.get("bytes"), "total_bytes": r.get("totalBytes")}
               for r in status.get("repairs") or []]
    progressing = condition_of(status, "Progressing")
    instances = [{"name": i.get("name"), "role": i.get("role"), "serving": bool(i.get("serving")),
                  "lag_ms": i.get("lagMs"), "node": i.get("node"), "volume_epoch": i.get("volumeEpoch")}
                 for i in status.get("instances") or []]
    problems = problems_of(status, instances)
    return {
        "name": meta.get("name"), "namespace": meta.get("namespace"),
        "phase": status.get("phase", "Unknown"), "healthy": not problems, "problems": problems,
        "maintenance": condition_of(status, MAINTENANCE).get("status") == "True",
        "conditions": [{"type": c.get("type"), "status": c.get("status"), "reason": c.get("reason"),
                        "message": c.get("message"), "since": c.get("lastTransitionTime")}
                       for c in status.get("conditions") or []],
        "zones": list(status.get("zones") or []), "ready_nodes": status.get("readyNodes"),
        "healthy_pgs": status.get("healthyPGs"), "writable_pgs": status.get("writablePGs"),
        "vdl": status.get("vdl"),
        "storage_nodes": [_pod_row(p, pgs_of.get(p["metadata"]["name"], []), down) for p in storage_pods],
        "pgs": pgs,
        "repairs": repairs,
        "repairing": progressing.get("message") if progressing.get("reason") == "Repairing" else None,
        "backup": status.get("backup"),
        "backup_healthy": {"True": True, "False": False}.get(condition_of(status, BACKUP_HEALTHY).get("status")),
        "instances": instances, "ready_instances": status.get("readyInstances"),
        "current_primary": status.get("currentPrimary"),
        "events": _events(events, event_limit),
    }


def plain_event(e: Any) -> dict[str, Any]:
    obj = e.involved_object
    return {"type": e.type, "reason": e.reason, "object": f"{obj.kind}/{obj.name}",
            "message": e.message, "count": e.count, "last_seen": event_time(e)}


def gather(target: Target, name: str, event_limit: int = EVENTS) -> dict[str, Any]:
    """Read the cluster, its pods, its placement and its events; summarize them."""
    ac = target.cluster(name)
    pods = [target.plain(p) for p in target.pods(selector_labels(name))]
    cm = target.core.list_namespaced_config_map(
        target.namespace, field_selector=f"metadata.name={placement_name(name)}",
        _request_timeout=TIMEOUT).items
    doc = pl.parse_configmap(target.plain(cm[0]))[0] if cm else None
    return summarize(ac, pods, doc, [plain_event(e) for e in target.events_of(name)], event_limit)
