"""One reconcile pass of an AuroraCluster: converge objects, placement and segments, and
compute the status. Idempotent, so it is safe to run on every event, on a timer, and
after an operator restart at any point.

The pass only sequences the steps; each lives in a module of its own: objects.py (owned
objects), placement_store.py (placement CAS), segments.py and repair_executor.py (the
nodes), restoreflow.py (a restore cluster), status.py (pure). Apiserver calls are
blocking (the kubernetes client) and run in threads; node calls are async (nodeclient)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from tidemark_protocol.quorum import SEGMENTS_PER_PG, WRITE_QUORUM

from . import (
    backup_health,
    instance_resources,
    instance_tls_access,
    instances,
    maintenance,
    netpolicy,
    node_access,
    node_tls_access,
    objects,
    placement_store,
    repair_executor,
    restoreflow,
    segments,
    switchover,
)
from . import placement as pl
from .backupspec import BackupSpec, RestoreSpec
from .kube import Kube
from .model import ROLE_LABEL, resolve_zones
from .nodeclient import NodeClient
from .repairs import parse_quantity
from .resources import desired_objects
from .restorejobs import RestoreJob
from .spec import ClusterSpec, parse_spec
from .state import ClusterState
from .status import PodObs, apply_restore_status, caught_up_segments, compute_status

Event = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass(frozen=True)
class Settings:
    node_command: Sequence[str] = ("tidemark",)
    kubeconfig: str | None = None  # None: in-cluster, else the default kubeconfig
    # The storage pods' image when a spec names none: the chart passes the operator's own
    # image, so there is one source of truth and nothing points at an unpublished tag.
    default_image: str = f"tidemark:{version('tidemark')}"
    # The operator pod's own namespace (the chart passes it): the NetworkPolicies admit
    # its pods there. None: run outside a pod (the rig), any namespace's operator pods.
    operator_namespace: str | None = None


@dataclass
class Context:
    """What every pass needs from the operator process."""

    kube: Kube
    nodes: NodeClient
    settings: Settings


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def reconcile(ctx: Context, state: ClusterState, body: Mapping[str, Any],
                    pods: Callable[[], Sequence[PodObs]], event: Event,
                    instance_pods: Callable[[], Sequence[instances.InstancePod]] = list) -> dict[str, Any]:
    """Converge one AuroraCluster; returns its new status. PODS: its storage pods now;
    INSTANCE_PODS: its database instance pods now."""
    spec = parse_spec(body.get("spec"))
    if spec.image is None:
        spec = spec.model_copy(update={"image": ctx.settings.default_image})
    backup = BackupSpec.of(spec.backup)
    restore = RestoreSpec.of(spec.restore)
    async with state.lock:
        status = await _converge(ctx, state, body, spec, backup, restore, pods, event)
        if status.get("phase") != "Blocked":
            status.update(await _instances(ctx, state, body, spec, restore, status, instance_pods, event))
        return finish_status(state, body, status, backup, restore, event)


def finish_status(state: ClusterState, body: Mapping[str, Any], status: dict[str, Any],
                  backup: BackupSpec, restore: RestoreSpec | None, event: Event) -> dict[str, Any]:
    """Overlay status.backup (the backup daemon's last poll; never waits on S3) and the
    restore's progress (never Ready before the backup is loaded)."""
    meta = body["metadata"]
    gen = int(meta.get("generation", 1))
    old = dict(body.get("status") or {})
    if backup.enabled and backup.store is not None and restore is not None and \
            not restoreflow.restored(body, state.restore):
        status["backup"] = {"target": backup.store.url, "state": "WaitingForRestore"}
    elif backup.enabled and backup.store is not None:
        polled = state.backup_block if state.backup_of == (backup.store, backup.retention_days) else None
        status["backup"] = {**(polled or {"target": backup.store.url, "state": "Active"}),
                            "retentionDays": backup.retention_days}
    if "backup" in status:
        backup_health.apply(status, gen, old.get("conditions") or [], now_iso(), time.time())
    if restore is not None:
        rs = restoreflow.restore_status(state.restore, old, restore, event)
        status = apply_restore_status(status, rs, gen, old.get("conditions") or [], now_iso())
    maintenance.apply(status, maintenance.active(body), gen, old.get("conditions") or [], now_iso(), event)
    return status


async def _instances(ctx: Context, state: ClusterState, body: Mapping[str, Any], spec: ClusterSpec,
                     restore: RestoreSpec | None,
                     status: Mapping[str, Any], list_pods: Callable[[], Sequence[instances.InstancePod]],
                     event: Event) -> dict[str, Any]:
    """The database instances: built once the volume is writable (and, for a restore
    cluster, loaded: a writer opening a volume mid-load would fence the loader)."""
    kube = ctx.kube
    meta = body["metadata"]
    name, ns = meta["name"], meta["namespace"]
    if not await asyncio.to_thread(instances.wanted, kube, name, ns, spec):
        return {}
    was_ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (body.get("status") or {}).get("conditions") or [])
    writable = all(n >= WRITE_QUORUM for n in (status.get("segments") or {"": 0}).values())
    if restore is not None and not restoreflow.restored(body, state.restore):
        return {"readyInstances": f"0/{spec.instances}", "instancesBlocked": "waiting for the restore"}
    if not (writable or was_ready):
        return {"readyInstances": f"0/{spec.instances}", "instancesBlocked": "waiting for a writable volume"}
    owner = placement_store.owner_of(body)
    blocked = await asyncio.to_thread(instances.ensure_credentials, kube, name, ns, spec, owner, event)
    reason = "CredentialsMissing"
    if blocked is None:  # the user's certificate for the PostgreSQL port, when the spec names one
        blocked = await asyncio.to_thread(instance_tls_access.user_secret_problem, kube, ns,
                                          spec.instance.tls.secret_name)
        reason = "TLSSecretUnusable"
    rolling_writer = False
    if blocked is None:
        # before the Deployments: their pods mount the instances' certificate
        ca_pem = await asyncio.to_thread(instance_tls_access.ensure, kube, state, name, ns, owner, event)
        objs = instance_resources.instance_objects(name, ns, spec, owner, ctx.settings.node_command, ca_pem)
        objs, rolling_writer = await asyncio.to_thread(_hold_writer_template, kube, ns, objs, state, event)
        await asyncio.to_thread(objects.converge, kube, objs, True, event)
    elif (body.get("status") or {}).get("instancesBlocked") != blocked:
        event("Warning", reason, blocked)
    pods = list(list_pods())
    gone = await asyncio.to_thread(instances.evict_from_lost_nodes, kube, ns, pods, event)
    pods = [p for p in pods if p.name not in gone]
    seen = await instances.observe(instances.admin_client(ctx.nodes, state), pods)
    fresh = [p for p in pods if p.name not in state.evicted_writers]  # writer_watch.py deletes those
    expired = await asyncio.to_thread(instances.evict_expired_writer, kube, name, ns, fresh, seen, event, time.time())
    pods = [p for p in pods if p.name not in expired]
    holder = await asyncio.to_thread(instances.lease_holder, kube, name, ns)
    holder_serving = any(p.name == holder and (seen.get(p.name) or {}).get("serving") for p in pods)
    if rolling_writer and holder is not None:
        state.switched_from = holder  # replaced by the rolling update: planned, not a Failover
    out = instances.instances_status(spec, pods, seen, holder, blocked)
    moved = await asyncio.to_thread(switchover.step, kube, ns, body, pods, holder, holder_serving, event,
                                    now_iso(), time.time())
    if moved is not None:
        out["switchover"] = moved
        if moved.get("phase") == "Switching":
            out["targetPrimary"] = "(a new writer pod)"
            state.switched_from = moved.get("from")  # this process's memory: a body may lag
    planned = {state.switched_from, switchover.stopped_writer(moved)} - {None}
    instances.note_primary(state, holder, holder_serving, event, planned=planned)
    return out


def _hold_writer_template(kube: Kube, ns: str, objs: list[dict[str, Any]], state: ClusterState,
                          event: Event) -> tuple[list[dict[str, Any]], bool]:
    """Leave the writer Deployment as it is while the replicas roll to a new template;
    True with the objects when this pass gives the writer its new template (its pod is
    replaced: a planned move, reported as RollingUpdate, never as Failover)."""
    by_role = {o["metadata"]["labels"].get(ROLE_LABEL): o for o in objs if o["kind"] == "Deployment"}
    writer, replica = by_role["writer"], by_role["replica"]
    current = {role: kube.read("Deployment", o["metadata"]["name"], ns) for role, o in by_role.items()}
    if not instance_resources.hold_writer(current["writer"], writer, current["replica"], replica):
        released = instance_resources.template_changes(current["writer"], writer)
        if released:
            event("Normal", "RollingUpdate", "every replica runs the new instance template: the writer is "
                                             "replaced now (a new writer pod)")
        state.writer_held = False
        return objs, released
    if not state.writer_held:
        event("Normal", "RollingUpdate", "new instance template: replicas first; the writer is replaced "
                                         "(a new writer pod) once every replica runs it")
        state.writer_held = True
    return [o for o in objs if o is not writer], False


async def _converge(ctx: Context, state: ClusterState, body: Mapping[str, Any], spec: ClusterSpec,
                    backup: BackupSpec, restore: RestoreSpec | None,
                    list_pods: Callable[[], Sequence[PodObs]], event: Event) -> dict[str, Any]:
    kube, nodes = ctx.kube, ctx.nodes
    meta = body["metadata"]
    name, ns, gen = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    old = dict(body.get("status") or {})
    old.pop("kopf", None)
    zones, reason, msg = resolve_zones(spec, await asyncio.to_thread(kube.ready_nodes_by_zone))
    existing = await asyncio.to_thread(placement_store.read, kube, body)
    if zones is None and existing is None:
        # Nothing built yet and the spec cannot be satisfied: build nothing.
        if (old.get("conditions") or [{}])[0].get("reason") != reason:
            event("Warning", reason, msg)
        return compute_status(gen, None, None, [], {}, old, now_iso(), blocked=(reason, msg))
    job = None
    if restore is not None:
        job, build = restoreflow.pre_build(kube, state, body, spec, restore, backup, existing is not None, event)
        if not build:  # validating the source (or it failed): build nothing yet
            return compute_status(gen, zones, None, [], {}, old, now_iso(),
                                  progressing=("Restoring", job.message if job else ""))
    if zones is None:
        # Already built: keep running on the zones the placement names (a zone that
        # lost all nodes is a failure to ride out, not a reason to tear down).
        assert existing is not None
        zones = sorted(pl.parse_configmap(existing)[0]["zones"])
    progressing = None
    try:
        doc = await asyncio.to_thread(placement_store.ensure_placement, kube, body, zones, spec, event)
    except pl.Conflict as exc:
        event("Normal", "PlacementConflict", f"{exc}; retrying")
        reread = await asyncio.to_thread(placement_store.read_doc, kube, body)
        if reread is None:
            raise
        doc = reread
        progressing = ("PlacementConflict", str(exc))
    # before the StatefulSets: their pods mount the key (nodes get the cluster's admin token)
    creds = await asyncio.to_thread(node_access.cluster_credentials, kube, state, name, ns,
                                    placement_store.owner_of(body), event)
    # likewise the TLS Secret (its certificate re-issued here when due); every node call
    # verifies the nodes against the cluster's own CA
    trust = await asyncio.to_thread(node_tls_access.cluster_trust, kube, state, name, ns,
                                    placement_store.owner_of(body), event)
    nodes = nodes.for_cluster(creds, trust)
    try:
        return await _converge_nodes(ctx, state, body, spec, backup, restore, list_pods, event, nodes, zones,
                                     doc, job, progressing)
    finally:
        if nodes.refused:  # the key in the Secret changed: read it again next pass
            state.node_credentials = None


async def _converge_nodes(ctx: Context, state: ClusterState, body: Mapping[str, Any], spec: ClusterSpec,
                          backup: BackupSpec, restore: RestoreSpec | None,
                          list_pods: Callable[[], Sequence[PodObs]], event: Event, nodes: NodeClient,
                          zones: list[str], doc: dict[str, Any], job: RestoreJob | None,
                          progressing: tuple[str, str] | None) -> dict[str, Any]:
    """The objects, repairs and segments, calling the nodes through NODES (the cluster's)."""
    kube = ctx.kube
    meta = body["metadata"]
    name, ns, gen = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    old = dict(body.get("status") or {})
    old.pop("kopf", None)
    pods = list(list_pods())
    statuses = await nodes.statuses(pods)
    current = caught_up_segments(doc, statuses)
    all_healthy = bool(current) and all(n == SEGMENTS_PER_PG for n in current.values())
    # A restored volume's own backups start once it is loaded: uploads of a partial
    # load that is later wiped and redone would mix two histories in its prefix.
    pod_backup = backup if restore is None or restoreflow.restored(body, job) else None
    owner = placement_store.owner_of(body)
    objs = desired_objects(name, ns, zones, spec, owner, ctx.settings.node_command, pod_backup)
    policies, unwanted = netpolicy.wanted(name, ns, spec, ctx.settings.operator_namespace, owner)
    actions, deferred = await asyncio.to_thread(objects.converge, kube, [*objs, *policies], all_healthy, event)
    for policy in unwanted:
        await asyncio.to_thread(objects.remove_ours, kube, "NetworkPolicy", policy, ns, name, event)
    repairing: list[str] = []
    try:
        doc, repairing = await asyncio.to_thread(
            repair_executor.run_repairs, kube, state, body, spec, doc, statuses, event)
    except pl.Conflict as exc:
        progressing = ("PlacementConflict", str(exc))
    bandwidth = parse_quantity(spec.repair.rebuild_bandwidth)
    created = await segments.ensure_segments(nodes, state.applied, doc, pods, statuses, event, bandwidth)
    if created:
        statuses = await nodes.statuses(pods)
    await repair_executor.drive_hydration(nodes, doc, pods, statuses, bandwidth, event)
    await segments.drop_orphans(nodes, doc, pods, statuses, event)
    if job is not None:
        await restoreflow.post_observe(nodes, state, job, body, doc, pods, statuses, event)
    want = pl.pods_of(doc)
    missing = sorted(want - {p.name for p in pods if statuses.get(p.name) is not None})
    if deferred:
        progressing = ("RollingZones", "pod template change waits, one zone at a time, for "
                       f"healthy segments and settled zones: {', '.join(deferred)}")
    if repairing:
        progressing = ("Repairing", "; ".join(repairing))
    if actions:
        progressing = ("Reconciling", "; ".join(actions))
    elif missing and len(missing) == len(want):
        progressing = ("WaitingForPods", f"waiting for storage pods: {', '.join(missing)}")
    return compute_status(gen, zones, doc, pods, statuses, old, now_iso(), progressing=progressing)
