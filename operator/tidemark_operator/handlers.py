"""kopf handlers, thin: everything real happens in reconcile.py (an AuroraCluster pass),
backup_poll.py (status.backup) and snapshots.py (AuroraSnapshot).

`build_registry(interval)` registers them on a registry of their own (the timer's
interval is a run option). The operator process's shared objects (apiserver client,
node client, settings) live in kopf's memo; what it remembers about one AuroraCluster
in that object's memo (state.ClusterState)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from . import (
    backup_poll,
    ha,
    instances,
    metrics,
    nodetls,
    refusals,
    restoreflow,
    snapshots,
    writer_watch,
)
from .backupspec import SNAPSHOT_PLURAL, BackupSpec
from .instances import InstancePod
from .kube import Kube, connection_info, load_config
from .model import (
    CLUSTER_LABEL,
    COMPONENT_LABEL,
    GROUP,
    INSTANCE_COMPONENT,
    PLURAL,
    ROLE_LABEL,
    STORAGE_COMPONENT,
    VERSION,
    ZONE_POD_LABEL,
)
from .nodeclient import NodeClient
from .reconcile import Context, Settings, now_iso, reconcile
from .spec import parse_spec
from .state import cluster_state
from .status import PodObs

log = logging.getLogger("tidemark_operator")
Event = Callable[[str, str, str], None]


def context(memo: Any) -> Context:
    ctx: Context = memo.context
    return ctx


def events(body: kopf.Body) -> Event:
    def event(type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", body.metadata.namespace, body.metadata.name, reason, message)
        (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message)
    return event


# -- the operator process --------------------------------------------------------------------

def settings_of(memo: Any) -> Settings:
    s: Settings = memo.get("settings") or Settings()
    return s


async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.persistence.finalizer = "tidemark.dev/operator"
    # With --peering (ha.py): a dead leader's record expires after LIFETIME, and the
    # keep-alives need not be logged (pauses and resumes are logged regardless).
    settings.peering.lifetime = ha.LIFETIME
    settings.peering.stealth = True
    # Watching named namespaces (the chart's namespaced install): kopf's restricted mode,
    # so it never lists namespaces cluster-wide (the Role grants nothing there: 403s
    # retried nine times and logged as errors) and takes the CRDs from its start-up scan.
    if memo.get("namespaces"):
        settings.scanning.disabled = True
    await asyncio.to_thread(load_config, settings_of(memo).kubeconfig)
    if settings.peering.mandatory and not settings.peering.standalone:  # --peering
        await asyncio.to_thread(ha.ensure_peering, settings.peering.name, settings.peering.clusterwide,
                                memo.get("namespaces") or [])
        log.info("peering %r, priority %d: working while no live peer has a higher one",
                 settings.peering.name, settings.peering.priority)
    memo.context = Context(Kube(), NodeClient(), settings_of(memo))


async def login(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """kopf's own apiserver login, from the same kubeconfig/in-cluster credentials."""
    await asyncio.to_thread(load_config, settings_of(memo).kubeconfig)
    return connection_info(settings.networking.trust_env)


async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    if "context" in memo:
        await context(memo).nodes.close()


# -- storage pods, indexed by cluster --------------------------------------------------------

def storage_pods(namespace: str, name: str, labels: kopf.Labels, meta: kopf.Meta, status: kopf.Status,
                 spec: kopf.Spec, **_: Any) -> dict[tuple[str, str], PodObs]:
    """(namespace, cluster) -> its storage pods as observed (kopf keeps the index current
    from its watch: no pod listing per pass), and whether each serves https (its own
    command says so: pods of a cluster made before node TLS serve http until they roll)."""
    ip = status.get("podIP") or None
    running = status.get("phase") == "Running" and bool(ip) and meta.get("deletionTimestamp") is None
    tls = nodetls.serves_tls(nodetls.pod_command(spec))
    return {(namespace, labels[CLUSTER_LABEL]): PodObs(name, labels.get(ZONE_POD_LABEL, ""), ip, running, tls)}


def pods_of(index: kopf.Index[tuple[str, str], PodObs], ns: str, cluster: str) -> Callable[[], list[PodObs]]:
    return lambda: sorted(index.get((ns, cluster), []), key=lambda p: p.name)


def instance_pods(namespace: str, name: str, labels: kopf.Labels, meta: kopf.Meta, spec: kopf.Spec,
                  status: kopf.Status, **_: Any) -> dict[tuple[str, str], InstancePod]:
    """(namespace, cluster) -> its database instance pods as observed, and whether each
    one's admin endpoint is https."""
    ip = status.get("podIP") or None
    running = status.get("phase") == "Running" and bool(ip) and meta.get("deletionTimestamp") is None
    tls = nodetls.serves_tls(nodetls.pod_command(spec))  # its admin endpoint: https, or http (older pods)
    return {(namespace, labels[CLUSTER_LABEL]): InstancePod(name, labels.get(ROLE_LABEL, ""), ip, running,
                                                            spec.get("nodeName"), tls)}


def instances_of(index: kopf.Index[tuple[str, str], InstancePod], ns: str,
                 cluster: str) -> Callable[[], list[InstancePod]]:
    return lambda: sorted(index.get((ns, cluster), []), key=lambda p: p.name)


# -- AuroraCluster -----------------------------------------------------------------------------

async def _run(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
               pods: kopf.Index[tuple[str, str], PodObs], source: str,
               inst: kopf.Index[tuple[str, str], InstancePod]) -> None:
    ctx = context(memo)
    ns, name = body.metadata.namespace, body.metadata.name
    # Work from a fresh read: a timer may still fire for an object deleted meanwhile (a
    # zombie pass would recreate children owned by a dead uid), and the spec may be newer.
    fresh = await asyncio.to_thread(ctx.kube.cluster, ns, name)
    if fresh is None or fresh["metadata"].get("uid") != body.metadata.uid \
            or fresh["metadata"].get("deletionTimestamp"):
        metrics.forget(ns, name)
        return
    state = cluster_state(memo)
    if ha.stale_since_last_pass(memo, float(memo.get("interval") or 3.0)):
        # no pass here for a while (cut off from the apiserver, or paused: ha.py): what
        # this process observed before is stale
        log.info("%s/%s: first pass after a gap, forgetting the old observations", ns, name)
        ha.forget_stale(state)
    started = time.monotonic()
    old = {k: v for k, v in (fresh.get("status") or {}).items() if k != "kopf"}
    gen = int(fresh["metadata"].get("generation", 1))
    try:
        status = await reconcile(ctx, state, fresh, pods_of(pods, ns, name), events(body),
                                 instances_of(inst, ns, name))
    except Exception as exc:
        why = refusals.refusal(exc)
        metrics.record_reconcile(source, "error" if why is None else "refused", time.monotonic() - started)
        if why is None:
            raise
        # a refusal a person must act on (an RBAC verb, a quota, a webhook, an invalid
        # object): say so in the status and go on (the timer's next pass retries; a crash
        # or a backoff loop would only say it in the log)
        log.warning("%s/%s: pass refused (%s): %s", ns, name, why.reason, why.message)
        if state.refusal != why and refusals.newly_refused(old, why):
            events(body)("Warning", why.reason, why.message)
        state.refusal = why
        status = refusals.refused(old, why, gen, now_iso())
    else:
        metrics.record_reconcile(source, "ok", time.monotonic() - started)
        state.refusal = None
        refusals.granted(status, old, gen, now_iso())
    finally:
        ha.mark_pass(memo)
    metrics.record_status(ns, name, status, fresh["metadata"].get("creationTimestamp"))
    if status != old:
        patch.status.update(status)
        for key in set(old) - set(status):
            patch.status[key] = None


async def on_change(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                    storage_pods: kopf.Index[tuple[str, str], PodObs],
                    instance_pods: kopf.Index[tuple[str, str], InstancePod], **_: Any) -> None:
    try:
        await _run(body, patch, memo, storage_pods, "change", instance_pods)
    except Exception as exc:
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=3) from exc


async def observe(body: kopf.Body, patch: kopf.Patch, memo: kopf.Memo,
                  storage_pods: kopf.Index[tuple[str, str], PodObs],
                  instance_pods: kopf.Index[tuple[str, str], InstancePod], **_: Any) -> None:
    """Continuous observation: pod and segment health, drift of owned objects, VDL."""
    if body.metadata.get("deletionTimestamp"):
        return
    await _run(body, patch, memo, storage_pods, "timer", instance_pods)


def backup_enabled(spec: kopf.Spec, **_: Any) -> bool:
    return bool((spec.get("backup") or {}).get("enabled"))


async def backup_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """status.backup of a backed-up cluster: poll its store every POLL_INTERVAL seconds
    (in a thread) into the cluster's memo, for the passes to copy. Runs while
    spec.backup.enabled; a restore cluster's own backup waits for the load."""
    ctx, state = context(memo), cluster_state(memo)
    while not stopped:
        backup = BackupSpec.of(parse_spec(body.spec).backup)  # the body is live in daemons
        waiting = body.spec.get("restore") and not restoreflow.restored(body, state.restore)
        if backup.store is not None and not waiting:
            key = (backup.store, backup.retention_days)
            prev = state.backup_block if state.backup_of == key else None
            block = await asyncio.to_thread(backup_poll.poll, ctx.kube.core, body.metadata.namespace,
                                            backup.store, backup.retention_days, prev)
            state.backup_block, state.backup_of = block, key
        await stopped.wait(backup_poll.POLL_INTERVAL)


def has_instances(spec: kopf.Spec, **_: Any) -> bool:
    return int(spec.get("instances") or 0) > 0


async def writer_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo,
                        instance_pods: kopf.Index[tuple[str, str], InstancePod], **_: Any) -> None:
    """The writer Lease, every writer_watch.WATCH_EVERY seconds: a writer that stopped
    renewing it and does not answer is replaced at once (writer_watch.py), not at the
    next status pass. Runs while spec.instances > 0."""
    ctx, state = context(memo), cluster_state(memo)
    ns, name = body.metadata.namespace, body.metadata.name
    while not stopped:
        try:
            # the admin endpoints' view: the cluster's CA as the last pass read it
            await writer_watch.check(ctx.kube, instances.admin_client(ctx.nodes, state), state, name, ns,
                                     instances_of(instance_pods, ns, name)(), events(body))
        except Exception as exc:  # noqa: BLE001 - an apiserver blip: the next look retries
            log.warning("%s/%s writer lease check failed: %s", ns, name, exc)
        await stopped.wait(writer_watch.WATCH_EVERY)


async def pause_daemon(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Does nothing until kopf stops it. When the reason is that this process pauses (a
    peer of higher priority is alive: ha.py), kopf stops every other daemon and timer too,
    and what this process remembers of the cluster, and the gauges it exports for it, are
    about to go stale while another peer works: forget them now, not at some later pass."""
    await stopped.wait()
    if stopped.reason is not None and stopped.reason & kopf.DaemonStoppingReason.OPERATOR_PAUSING:
        ns, name = body.metadata.namespace, body.metadata.name
        log.info("%s/%s: pausing (another operator peer works): forgetting the cluster's state", ns, name)
        ha.forget_stale(cluster_state(memo))
        metrics.forget(ns, name)


# -- AuroraSnapshot (sync handlers: blocking store I/O in kopf's threads) ----------------------

def snapshot_create(body: kopf.Body, retry: int, memo: kopf.Memo, **_: Any) -> None:
    """Pending -> Ready, or Failed with a reason (retried: a backup that has no restorable
    point yet, or an unreachable store, may recover)."""
    if (body.get("status") or {}).get("phase") == "Ready":
        return
    kube = context(memo).kube
    raw = dict(body)
    event = events(body)
    try:
        status = snapshots.create(kube, raw, event)
    except Exception as exc:
        reason = exc.reason if isinstance(exc, snapshots.SnapshotFailed) else "SnapshotError"
        msg = f"{exc}"[:1000] or type(exc).__name__
        event("Warning", reason, msg)
        with contextlib.suppress(Exception):
            snapshots.patch_status(kube, raw, {"phase": "Failed", "reason": reason, "message": msg,
                                               "attempts": retry + 1})
        raise kopf.TemporaryError(msg, delay=10) from exc
    snapshots.patch_status(kube, raw, {**status, "reason": None, "attempts": retry + 1})


def snapshot_delete(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The finalizer: the snapshot's objects go with the resource."""
    event = events(body)
    try:
        snapshots.delete(context(memo).kube, dict(body), event)
    except ApiException as exc:
        if exc.status == 404:  # the credentials Secret is gone: the objects cannot be reached
            event("Warning", "SnapshotOrphaned", f"cannot delete the snapshot's objects: {exc.reason}")
            return
        raise kopf.TemporaryError(f"snapshot delete failed: {exc}", delay=5) from exc
    except Exception as exc:
        event("Warning", "SnapshotDeleteFailed", str(exc)[:500])
        raise kopf.TemporaryError(f"snapshot delete failed: {exc}", delay=5) from exc


def build_registry(interval: float = 3.0) -> kopf.OperatorRegistry:
    """Every handler of the operator on a fresh registry (INTERVAL: the observation timer)."""
    reg = kopf.OperatorRegistry()
    kopf.on.startup(registry=reg)(startup)
    kopf.on.login(registry=reg)(login)
    kopf.on.cleanup(registry=reg)(cleanup)
    kopf.index("pods", labels={CLUSTER_LABEL: kopf.PRESENT, COMPONENT_LABEL: STORAGE_COMPONENT},
               registry=reg)(storage_pods)
    kopf.index("pods", labels={CLUSTER_LABEL: kopf.PRESENT, COMPONENT_LABEL: INSTANCE_COMPONENT},
               registry=reg)(instance_pods)
    kopf.on.update(GROUP, VERSION, PLURAL, field="spec", registry=reg)(on_change)
    kopf.on.create(GROUP, VERSION, PLURAL, registry=reg)(on_change)
    kopf.on.resume(GROUP, VERSION, PLURAL, registry=reg)(on_change)
    kopf.timer(GROUP, VERSION, PLURAL, interval=interval, initial_delay=1.0, registry=reg)(observe)
    kopf.daemon(GROUP, VERSION, PLURAL, when=backup_enabled, registry=reg)(backup_daemon)
    kopf.daemon(GROUP, VERSION, PLURAL, id="writer_watch", when=has_instances, registry=reg)(writer_daemon)
    kopf.daemon(GROUP, VERSION, PLURAL, id="pause_watch", registry=reg)(pause_daemon)
    kopf.on.create(GROUP, VERSION, SNAPSHOT_PLURAL, retries=20, backoff=10, registry=reg)(snapshot_create)
    kopf.on.resume(GROUP, VERSION, SNAPSHOT_PLURAL, registry=reg)(snapshot_create)
    kopf.on.delete(GROUP, VERSION, SNAPSHOT_PLURAL, retries=12, backoff=5, registry=reg)(snapshot_delete)
    return reg
