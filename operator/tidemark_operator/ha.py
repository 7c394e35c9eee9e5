"""High availability: several operator processes, one active (kopf peering).

`tidemark operator run --peering NAME` joins the kopf peering object NAME (a
`ClusterKopfPeering` with `--all-namespaces`, a `KopfPeering` in each watched namespace
otherwise; created at startup if missing, ensure_peering). Peering is mandatory then: a process starts paused
and works only while no live peer has a higher priority. A paused (standby) process has
its watch streams closed and every daemon and timer stopped by kopf itself, so nothing of
ours (reconcile passes, writer_watch, backup polls, repair steps) runs there; when the
leader's record expires (LIFETIME after its last keep-alive) or it exits cleanly (its
record is removed at once), the standby lists everything afresh and its first pass of
each cluster picks up any repair in flight from the placement (repair_resume.py).

Without `--peering` the process is standalone, as before (the rig tests, a developer's
operator): kopf never pauses it and never looks for peers."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from typing import Any

import kopf
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .state import ClusterState

PEERING_GROUP, PEERING_VERSION = "kopf.dev", "v1"  # kopf's current group (not zalando.org)

# Seconds a peer's keep-alive is valid. kopf renews it every `LIFETIME - randint(5, 10)`
# seconds (at least 1), so a renewal has 5-10 s to land before the standby takes over:
# that margin, not the lifetime, is what keeps a slow apiserver from causing a flap, and
# it is the same for any lifetime above 10. 10 keeps a failover under ~10 s plus one
# pass, at one keep-alive PATCH per peer every 1-5 s.
LIFETIME = 10

# A cluster whose previous pass in this process ended longer ago than this was not being
# worked on here (the process was a paused peer, or cut off from the apiserver): what it
# remembers about the cluster is stale (see forget_stale). Beyond an active process's
# longest gap (the timer interval plus a pass), and floored so a short interval never
# makes a slow pass look like a pause.
RESUME_GAP_MIN_S = 30.0
LAST_PASS_KEY = "tidemark_last_pass"


def default_priority(now: float | None = None) -> int:
    """This process's peering priority: the earlier it started, the higher.

    kopf pauses every peer that sees a live peer of higher priority, and *all* peers
    that see an equal one, so each process needs its own. Deriving it from the start
    time (milliseconds, negated) rather than from a bare random number makes the
    longest-running process the leader: a newly started replica (a rolling update, a
    restarted standby) joins as standby instead of preempting a leader mid-repair. The
    random low digits break a tie between two processes started in the same millisecond.
    The result stays below 2**53 in magnitude (exact as a JSON number everywhere)."""
    ms = int((time.time() if now is None else now) * 1000)
    return -(ms * 1000 + random.randrange(1000))  # noqa: S311 - a tie-break, not a secret


def ensure_peering(name: str, clusterwide: bool, namespaces: Sequence[str],
                   api: client.ApiClient | None = None) -> list[str]:
    """Create the peering object(s) NAME if missing (blocking; the startup handler runs it
    in a thread): kopf never creates them, and a mandatory peer that finds none stays
    paused for good. The CRDs must exist (the chart installs them). Returns where it
    created one ("" for the cluster-scoped one)."""
    custom = client.CustomObjectsApi(api)
    made: list[str] = []
    for ns in [""] if clusterwide else list(namespaces):
        kind = "ClusterKopfPeering" if clusterwide else "KopfPeering"
        body = {"apiVersion": f"{PEERING_GROUP}/{PEERING_VERSION}", "kind": kind,
                "metadata": {"name": name, **({"namespace": ns} if ns else {})}}
        try:
            if clusterwide:
                custom.create_cluster_custom_object(PEERING_GROUP, PEERING_VERSION, "clusterkopfpeerings",
                                                    body, _request_timeout=10)
            else:
                custom.create_namespaced_custom_object(PEERING_GROUP, PEERING_VERSION, ns, "kopfpeerings",
                                                       body, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:  # no such resource: the peering CRDs are not installed
                raise kopf.PermanentError(
                    f"--peering {name}: the {kind} CRD ({PEERING_GROUP}) or the namespace is missing; install "
                    "crds/*kopf.dev.yaml (the chart does with crds.create and crds.kopfPeering)") from exc
            if exc.status != 409:  # 409: it exists (another peer made it)
                raise
        else:
            made.append(ns)
    return made


def resume_gap(interval: float) -> float:
    return max(RESUME_GAP_MIN_S, 5 * interval)


def forget_stale(state: ClusterState) -> None:
    """Drop what this process remembered about a cluster it has not worked on for a
    while (it was a paused peer while another led): the clocks it kept (unhealthy pods,
    the writer Lease) would otherwise start repairs or evictions at once for a pod that
    was down back then, and the repairs and PUTs it knew of may have been finished or
    changed by the other peer. Each item is re-derived, as after a restart."""
    state.applied.clear()
    state.unhealthy_since.clear()
    state.known_repairs.clear()  # the next pass says RepairResumed for any in flight
    state.lease_seen = None
    state.primary, state.primary_lost_at, state.switched_from = None, None, None
    state.evicted_writers.clear()
    state.replacing.clear()
    state.node_credentials = None


def stale_since_last_pass(memo: Any, interval: float, now: float | None = None) -> bool:
    """True when the previous pass of the cluster whose kopf memo is MEMO ended longer
    than resume_gap(INTERVAL) ago in this process (the caller forgets the stale state)."""
    last = memo.get(LAST_PASS_KEY)
    now = time.monotonic() if now is None else now
    return last is not None and now - last > resume_gap(interval)


def mark_pass(memo: Any, now: float | None = None) -> None:
    """A pass of the cluster ended (measured from its end: a slow pass is no gap)."""
    memo[LAST_PASS_KEY] = time.monotonic() if now is None else now
