"""Switchover on demand: `kubectl tidemark switchover NAME` sets the annotation
`tidemark.dev/switchover: <request>` and the operator moves the writer once per request.

Replicas never open the volume, so the new writer is a new writer pod, as in a failover
but planned: the writer pod is deleted with its grace period (SIGTERM: the instance
closes its connections; every commit it answered was durable), its Deployment starts a
new one, whose `Writer.open` recovers and seals with a new volume epoch and claims the
Lease. The request is done when a writer other than the old one holds the Lease and
serves: a `Switchover` event with the time it took. status.switchover keeps the last
request: request, phase (Switching, Done, Refused, TimedOut), from, to, startedAt,
durationSeconds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .instances import InstancePod
from .kube import Kube
from .model import SWITCHOVER_ANNOTATION

Event = Callable[[str, str, str], None]
TIMEOUT_S = 300.0  # a switchover not done by then is reported, not retried


def requested(body: Mapping[str, Any]) -> str | None:
    value = ((body.get("metadata") or {}).get("annotations") or {}).get(SWITCHOVER_ANNOTATION)
    return str(value).strip() or None if value is not None else None


def stopped_writer(last: Mapping[str, Any] | None) -> str | None:
    """The writer pod a switchover stopped (its replacement is no failover)."""
    return (last or {}).get("from") if (last or {}).get("phase") in ("Switching", "Done", "TimedOut") else None


def _age(started: str, now: float) -> float:
    return now - dt.datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()


def step(kube: Kube, ns: str, body: Mapping[str, Any], pods: Sequence[InstancePod], holder: str | None,
         holder_serving: bool, event: Event, now_iso: str, now: float) -> dict[str, Any] | None:
    """One pass: start a new request, or finish the one running. Returns the
    status.switchover block (None: never asked)."""
    last = (body.get("status") or {}).get("switchover")
    request = requested(body)
    if request is None or (last or {}).get("request") == request:
        if not last or last.get("phase") != "Switching":
            return last
        if holder and holder != last.get("from") and holder_serving:
            took = round(_age(last["startedAt"], now), 1)
            event("Normal", "Switchover", f"writer moved from {last['from']} to {holder} in {took} s "
                                          f"(switchover {last['request']})")
            return {**last, "phase": "Done", "to": holder, "durationSeconds": took}
        if _age(last["startedAt"], now) > TIMEOUT_S:
            event("Warning", "SwitchoverTimedOut", f"switchover {last['request']}: no new writer serves "
                                                   f"{TIMEOUT_S:.0f} s after {last['from']} was stopped")
            return {**last, "phase": "TimedOut"}
        return last
    writer = next((p for p in pods if p.role == "writer" and p.name == holder and p.running), None)
    if writer is None or not holder_serving:
        why = "no running writer serves (a failover may be under way)"
        event("Warning", "SwitchoverRefused", f"switchover {request}: {why}; nothing was done")
        return {"request": request, "phase": "Refused", "message": why}
    kube.delete_pod(writer.name, ns)
    event("Normal", "SwitchoverStarted", f"switchover {request}: writer pod {writer.name} stopped (SIGTERM); "
                                         "its Deployment starts a new writer")
    return {"request": request, "phase": "Switching", "from": writer.name, "startedAt": now_iso}
