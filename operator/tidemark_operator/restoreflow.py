"""A restore AuroraCluster's passes: validate the source in a thread (nothing is built
until T is known restorable and the layouts match), let the usual pass build empty pods
and segments, then load the backup into them in a thread, and only then let the cluster
become Ready. status.restore records the phase; a load that an operator restart
interrupted (loadStarted without Done) is redone from scratch: every segment of the new
pods is deleted and recreated empty first. restore_into itself refuses a non-empty fleet,
so a half-loaded volume is never loaded over nor marked Ready."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tidemark_protocol.quorum import SEGMENTS_PER_PG
from tidemark_restore.inventory import iso, parse_time

from . import restorejobs as jobs
from .backupspec import BackupSpec, RestoreSpec, StoreRef
from .kube import Kube
from .nodeclient import NodeClient, NodeError
from .restorejobs import RestoreJob
from .spec import ClusterSpec
from .state import ClusterState
from .status import PodObs, healthy_segments
from .stores import open_ref
from .topology import topology_from_objects

Event = Callable[[str, str, str], None]
PHASES = {"validating": "Validating", "validated": "Preparing", "loading": "Loading", "done": "Done",
          "failed": "Failed"}


def source_opener(kube: Kube, ns: str, restore: RestoreSpec) -> Callable[[], tuple[Any, StoreRef]]:
    """Resolves the source when called (in the validation thread): a named AuroraCluster's
    spec.backup, or the explicit target."""

    def open_source() -> tuple[Any, StoreRef]:
        ref = restore.store
        if restore.source_cluster:
            src = kube.cluster(ns, restore.source_cluster)
            if src is None:
                raise ValueError(f"source AuroraCluster {restore.source_cluster} does not exist")
            b = BackupSpec.from_spec(src.get("spec") or {})
            if not b.enabled or b.store is None:
                raise ValueError(f"source AuroraCluster {restore.source_cluster} has no spec.backup")
            ref = b.store
        if ref is None:
            raise ValueError("spec.restore.source names neither a cluster nor a target")
        return open_ref(kube.core, ns, ref), ref

    return open_source


def parse_pit(text: str | None) -> int | None:
    return parse_time(text) if text else None


def retry_delay(attempt: int) -> float:
    """Seconds before retrying a failed restore step: doubling from RETRY_DELAY, at most
    10 minutes (a T outside the window may become restorable as the source uploads; a
    permanent mistake should not flood the events)."""
    return min(600.0, jobs.RETRY_DELAY * 2 ** min(max(attempt - 1, 0), 8))


def restored(body: Mapping[str, Any], job: RestoreJob | None) -> bool:
    """The backup is fully loaded (persisted Done, or this process's job finished)."""
    if ((body.get("status") or {}).get("restore") or {}).get("phase") == "Done":
        return True
    return job is not None and job.state == "done"


def pre_build(kube: Kube, state: ClusterState, body: Mapping[str, Any], spec: ClusterSpec,
              restore: RestoreSpec, backup: BackupSpec, built: bool,
              event: Event) -> tuple[RestoreJob | None, bool]:
    """(job, may build objects). No job once status.restore says Done."""
    meta = body["metadata"]
    old_rs = (body.get("status") or {}).get("restore") or {}
    if old_rs.get("phase") == "Done":
        return None, True
    job = state.restore
    vol = spec.volume
    lay = {"pg_count": vol.pg_count, "pages_per_pg": vol.pages_per_pg, "page_size": vol.page_size}
    start = False
    if job is None:
        interrupted = bool(old_rs.get("loadStarted"))
        job = state.restore = RestoreJob(
            needs_wipe=interrupted,
            attempt=int(old_rs.get("attempt", 0)) + (1 if interrupted else 0) or 1)
        if interrupted:
            event("Warning", "RestoreInterrupted", "a previous load did not finish (operator restart): "
                  "the new pods' segments are wiped and the restore starts over")
        start = True
    elif job.state == "failed" and time.monotonic() - job.failed_at > retry_delay(job.attempt):
        job.attempt += 1
        if job.failed_in == "validate":
            job.state, job.message = "validating", "retrying: reading the source backup"
            start = True
        else:
            job.state, job.message = "validated", "retrying the load on wiped segments"
    if start:
        event("Normal", "RestoreValidating", f"checking the source backup for {restore.point_in_time or 'latest'}")
        jobs.spawn(jobs.validate, job, source_opener(kube, meta["namespace"], restore), lay,
                   parse_pit(restore.point_in_time), backup.store if backup.enabled else None,
                   name=f"restore-validate-{meta['name']}")
    return job, built or job.lsn is not None


async def wipe(nodes: NodeClient, state: ClusterState, pods: Sequence[PodObs],
               statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> bool:
    """Delete every segment on the new pods (a partial load); the next pass recreates them
    empty. True when every DELETE succeeded."""
    ok = True
    for p in pods:
        for seg in (statuses.get(p.name) or {}).get("segments", []):
            pg = int(seg["pg"])
            try:
                await nodes.delete_segment(p.url, pg)
            except NodeError:
                ok = False
                continue
            state.applied.pop((p.name, pg), None)
    if ok:
        event("Warning", "RestoreWiped", "deleted the partially loaded segments; they are recreated empty")
    return ok


async def post_observe(nodes: NodeClient, state: ClusterState, job: RestoreJob, body: Mapping[str, Any],
                       doc: Mapping[str, Any] | None, pods: Sequence[PodObs],
                       statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> None:
    """Start the load once every PG has all 6 segments up (and wiped if needed)."""
    meta = body["metadata"]
    with job.lock:
        if job.state != "validated" or doc is None:
            return
        healthy = healthy_segments(doc, statuses)
        full = sum(1 for n in healthy.values() if n == SEGMENTS_PER_PG)
        if not healthy or full < len(healthy):
            job.message = f"waiting for the new pods' segments ({full}/{len(healthy)} PGs complete)"
            return
        wipe_now = job.needs_wipe
    if wipe_now:
        if await wipe(nodes, state, pods, statuses, event):
            with job.lock:
                job.needs_wipe = False
        return
    with job.lock:
        if job.state != "validated":
            return
        topo = topology_from_objects(dict(doc), {p.name: p.ip for p in pods if p.running},
                                     meta["namespace"], meta["name"], nodes.credentials, nodes.tls,
                                     frozenset(p.name for p in pods if not p.tls))
        job.state, job.message, job.progress = "loading", "loading the backup into the new pods", ""
    event("Normal", "RestoreLoading", f"loading the backup at LSN {job.lsn} into {len(topo.nodes)} pods")
    jobs.spawn(jobs.load, job, topo, name=f"restore-load-{meta['name']}")


def restore_status(job: RestoreJob | None, old: Mapping[str, Any], restore: RestoreSpec,
                   event: Event) -> dict[str, Any]:
    """status.restore from the job (or the persisted Done record)."""
    old_rs = dict(old.get("restore") or {})
    if job is None:
        return old_rs
    with job.lock:
        phase = PHASES[job.state]
        rs: dict[str, Any] = {
            "phase": phase,
            "pointInTime": iso(job.t_us) if job.t_us is not None else restore.point_in_time,
            "source": restore.source_cluster or (restore.store.url if restore.store else None),
            "lsn": job.lsn, "message": job.message, "progress": job.progress, "attempt": job.attempt,
            "loadStarted": bool(old_rs.get("loadStarted")) or job.state in ("loading", "done")
            or (job.state == "failed" and job.failed_in == "load") or job.needs_wipe,
        }
        if job.state == "done" and job.result is not None:
            rs.update({"pages": job.result.get("pages"), "newVdl": job.result.get("new_vdl"),
                       "seconds": job.result.get("total_s"), "progress": "",
                       "finishedAt": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
            rs["loadStarted"] = False  # explicit: a merge patch keeps keys that are merely absent
    if old_rs.get("phase") != phase:
        if phase == "Failed":
            event("Warning", "RestoreFailed", str(rs["message"]))
        elif phase == "Done":
            event("Normal", "Restored", f"restored {rs.get('pages')} pages at LSN {rs['lsn']} "
                  f"({rs['pointInTime']}) in {rs.get('seconds')}s")
    return {k: v for k, v in rs.items() if v is not None}
