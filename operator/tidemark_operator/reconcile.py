"""One reconcile pass of an AuroraCluster: converge objects, placement and segments, and
compute the status. Idempotent, so it is safe to run on every event, on a timer, and
after an operator restart at any point."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tidemark_protocol.quorum import SEGMENTS_PER_PG
from tidemark_protocol.repair import RepairLimits

from . import backupops, restoreflow
from . import placement as pl
from . import repair_resume as resume
from .backupspec import BackupSpec, RestoreSpec, apply_restore_status
from .model import (
    SPEC_HASH,
    TEMPLATE_HASH,
    ZONE_LABEL,
    ZONE_POD_LABEL,
    ClusterSpec,
    placement_name,
    resolve_zones,
    selector_labels,
)
from .repairs import Change, hydration_state, parse_duration, parse_quantity, plan_changes
from .resources import desired_objects, owner_reference, template_rollout_allowed
from .status import PodObs, caught_up_segments, compute_status

log = logging.getLogger("tidemark_operator")

Event = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass
class Settings:
    node_command: Sequence[str] = ("tidemark",)
    http_timeout: float = 1.5


@dataclass
class Memory:
    """What this operator process already told each node (lost on restart: then re-sent,
    which is harmless since segment PUTs are idempotent)."""

    applied: dict[tuple[str, str, int], str] = field(default_factory=dict)
    unhealthy_since: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    locks: dict[tuple[str, str], threading.Lock] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def lock(self, key: tuple[str, str]) -> threading.Lock:
        with self.guard:
            return self.locks.setdefault(key, threading.Lock())


MEMORY = Memory()


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_json(method: str, url: str, body: Any = None, timeout: float = 1.5) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - pod IPs
        return json.loads(resp.read() or b"null")


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)

    def ser(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def ready_nodes_by_zone(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for n in self.core.list_node(_request_timeout=10).items:
            ready = any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            zone = (n.metadata.labels or {}).get(ZONE_LABEL)
            if ready and zone and not n.spec.unschedulable:
                out[zone] = out.get(zone, 0) + 1
        return out

    def _read(self, kind: str, name: str, ns: str) -> Any:
        fn = {"Service": self.core.read_namespaced_service,
              "StatefulSet": self.apps.read_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
              "ConfigMap": self.core.read_namespaced_config_map}[kind]
        try:
            return self.ser(fn(name, ns, _request_timeout=10))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _create(self, obj: dict[str, Any]) -> None:
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        fn = {"Service": self.core.create_namespaced_service,
              "StatefulSet": self.apps.create_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.create_namespaced_pod_disruption_budget,
              "ConfigMap": self.core.create_namespaced_config_map}[kind]
        fn(ns, obj, _request_timeout=10)

    def _patch(self, obj: dict[str, Any]) -> None:
        ns, kind, name = obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]
        fn = {"Service": self.core.patch_namespaced_service,
              "StatefulSet": self.apps.patch_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget}[kind]
        fn(name, ns, obj, _request_timeout=10)

    def ensure(self, obj: dict[str, Any], event: Event, cur: Any = ...,
               template_change_allowed: bool = True) -> str | None:
        """Create OBJ if missing, patch it if our hash differs. Returns what was done
        ("created", "updated", "deferred": a StatefulSet template change waits its turn)."""
        kind, name, ns = obj["kind"], obj["metadata"]["name"], obj["metadata"]["namespace"]
        if cur is ...:
            cur = self._read(kind, name, ns)
        if cur is None:
            try:
                self._create(obj)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                return None
            event("Normal", "Created", f"created {kind} {name}")
            return "created"
        if (cur["metadata"].get("annotations") or {}).get(SPEC_HASH) != obj["metadata"]["annotations"][SPEC_HASH]:
            if kind == "StatefulSet":
                # selector and volumeClaimTemplates are immutable: patch what may change
                patch = {"metadata": {"annotations": obj["metadata"]["annotations"],
                                      "labels": obj["metadata"]["labels"]},
                         "spec": {"replicas": obj["spec"]["replicas"],
                                  "template": obj["spec"]["template"]}}
                cur_tpl = (cur["metadata"].get("annotations") or {}).get(TEMPLATE_HASH)
                if cur_tpl != obj["metadata"]["annotations"][TEMPLATE_HASH] and not template_change_allowed:
                    if cur["spec"].get("replicas") == obj["spec"]["replicas"]:
                        return "deferred"
                    # scaling is safe now; the template (and our hashes) wait their turn
                    patch = {"metadata": {}, "spec": {"replicas": obj["spec"]["replicas"]}}
                    self._patch({**patch, "kind": kind, "metadata": {"name": name, "namespace": ns}})
                    event("Normal", "Scaled", f"scaled {kind} {name} to {obj['spec']['replicas']}")
                    return "deferred"
                self._patch({**patch, "kind": kind, "metadata": {**patch["metadata"],
                             "name": name, "namespace": ns}})
            else:
                self._patch(obj)
            event("Normal", "Updated", f"updated {kind} {name}")
            return "updated"
        return None

    def pods(self, cluster: str, ns: str) -> list[PodObs]:
        sel = ",".join(f"{k}={v}" for k, v in selector_labels(cluster).items())
        out = []
        for p in self.core.list_namespaced_pod(ns, label_selector=sel, _request_timeout=10).items:
            running = (p.status.phase == "Running" and bool(p.status.pod_ip)
                       and p.metadata.deletion_timestamp is None)
            out.append(PodObs(p.metadata.name, (p.metadata.labels or {}).get(ZONE_POD_LABEL, ""),
                              p.status.pod_ip, running))
        return out


def ensure_placement(kube: Kube, body: Mapping[str, Any], zones: Sequence[str], spec: ClusterSpec,
                     event: Event) -> dict[str, Any]:
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    cm_name = placement_name(name)

    def read() -> Any:
        return kube._read("ConfigMap", cm_name, ns)

    def write(fn: Callable[..., Any], *args: Any) -> None:
        try:
            fn(*args, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 409:
                raise pl.Conflict(f"placement {cm_name} changed concurrently") from exc
            raise

    doc, changed = pl.compare_and_swap(
        read,
        lambda obj: write(kube.core.create_namespaced_config_map, ns, obj),
        lambda obj: write(kube.core.replace_namespaced_config_map, cm_name, ns, obj),
        lambda cur: pl.desired_placement(name, zones, spec, cur),
        lambda doc, rv: pl.configmap(name, ns, doc, body, rv),
    )
    if changed:
        event("Normal", "PlacementUpdated",
              f"placement {cm_name}: {len(doc['pgs'])} PGs on {len(pl.pods_of(doc))} pods")
    return doc


def node_statuses(pods: Sequence[PodObs], timeout: float) -> dict[str, dict[str, Any] | None]:
    out: dict[str, dict[str, Any] | None] = {}
    for p in pods:
        if not p.running:
            out[p.name] = None
            continue
        try:
            out[p.name] = http_json("GET", f"{p.url}/v1/status", timeout=timeout)
        except (OSError, urllib.error.URLError, ValueError):
            out[p.name] = None
    return out


def ensure_segments(ns: str, doc: Mapping[str, Any], pods: Sequence[PodObs],
                    statuses: Mapping[str, Mapping[str, Any] | None], event: Event,
                    timeout: float, bandwidth: int = 0) -> int:
    """PUT every PG's segment on each member pod that is up and lacks it or has stale
    peers. A member that lost its copy (e.g. an emptyDir pod rescheduled) while the PG
    already holds data gets its segment rebuilt from the other members (hydrate).
    Returns the number of segments created."""
    urls = {p.name: p.url for p in pods if statuses.get(p.name) is not None}
    done = 0
    seen_epoch: dict[int, int] = {}
    for st in statuses.values():
        for s in (st or {}).get("segments", []):
            seen_epoch[int(s["pg"])] = max(seen_epoch.get(int(s["pg"]), 0), int(s.get("volume_epoch", 0)))
    for pg, ms in pl.memberships(doc).items():
        peers = {m: urls[m] for m in ms.all_members if m in urls}
        # A segment created after a writer sealed the volume starts at the sealed epoch.
        epoch = max(int(doc.get("volume_epoch", 0)), seen_epoch.get(pg, 0))
        body = {"layout": doc["layout"], "membership": ms.to_json(), "peers": peers,
                "volume_epoch": epoch}
        fingerprint = json.dumps([body["membership"], peers], sort_keys=True)
        for member in ms.all_members:
            st = statuses.get(member)
            if st is None:
                continue
            has = any(int(s["pg"]) == pg for s in st.get("segments", []))
            key = (ns, member, pg)
            if has and MEMORY.applied.get(key) == f"{st.get('generation')}:{fingerprint}":
                continue
            try:
                http_json("PUT", f"{urls[member]}/v1/segments/{pg}", body, timeout=max(timeout, 5))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                event("Warning", "SegmentCreateFailed", f"pg {pg} on {member}: {exc}")
                continue
            MEMORY.applied[key] = f"{st.get('generation')}:{fingerprint}"
            if not has:
                done += 1
                event("Normal", "SegmentCreated", f"pg {pg} segment on {member}")
                holders = {m: urls[m] for m in ms.members if m != member and m in urls
                           and any(int(x["pg"]) == pg and int(x.get("scl", 0)) > 0
                                   for x in (statuses.get(m) or {}).get("segments", []))}
                if member in ms.members and holders:
                    try:
                        http_json("POST", f"{urls[member]}/v1/segments/{pg}/hydrate",
                                  {"sources": holders, "bandwidth_bytes_per_s": bandwidth},
                                  timeout=max(timeout, 5))
                        event("Normal", "Hydrating", f"pg {pg}: {member} lost its copy; rebuilding "
                              f"from {', '.join(sorted(holders))}")
                    except (OSError, urllib.error.URLError, ValueError) as exc:
                        event("Warning", "HydrateFailed", f"pg {pg} on {member}: {exc}")
    return done


def run_repairs(kube: Kube, body: Mapping[str, Any], spec: ClusterSpec, doc: dict[str, Any],
                statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> tuple[dict[str, Any], list[str]]:
    """Begin/finish segment replacements (placement CAS). Returns (placement, what is in
    progress or waiting, for the status)."""
    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    now = time.monotonic()
    since = MEMORY.unhealthy_since.setdefault((ns, name), {})
    zone_of = {p: z for z, ps in doc.get("zones", {}).items() for p in ps}
    for p in zone_of:
        if statuses.get(p) is None:
            since.setdefault(p, now)
        else:
            since.pop(p, None)
    limits = RepairLimits(node_loss_timeout=parse_duration(spec.node_loss_timeout),
                          max_concurrent=spec.max_concurrent_rebuilds,
                          bandwidth_bytes_per_s=parse_quantity(spec.rebuild_bandwidth))
    made: list[Change] = []
    waits: list[str] = []

    def update(cur: dict[str, Any] | None) -> dict[str, Any] | None:
        if cur is None:
            return None
        new, changes, w = plan_changes(cur, zone_of, statuses, since, now, limits)
        made[:] = changes
        waits[:] = w
        return new if changes else None

    cm_name = placement_name(name)

    def replace(obj: dict[str, Any]) -> None:
        try:
            kube.core.replace_namespaced_config_map(cm_name, ns, obj, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 409:
                raise pl.Conflict(f"placement {cm_name} changed concurrently") from exc
            raise

    # A repair in the placement that this process did not begin is the previous
    # operator's: say that it is picked up (every step below is derived from the
    # placement and the nodes' status, so it simply continues).
    resume.note_found((ns, name), pl.memberships(doc), statuses, event)
    new_doc, changed = pl.compare_and_swap(
        lambda: kube._read("ConfigMap", cm_name, ns), lambda obj: None, replace, update,
        lambda d, rv: pl.configmap(name, ns, d, {"apiVersion": body.get("apiVersion"),
                                                 "kind": body.get("kind"), "metadata": body["metadata"]}, rv))
    doc = new_doc if changed and new_doc is not None else doc
    if changed:
        dual = pl.memberships(doc)
        resume.note_begun((ns, name), {c.pg: dual[c.pg].epoch for c in made if c.kind == "begin"})
        if any(c.kind == "begin" for c in made):
            resume.crash_point("after-repair-begin")
        if any(c.kind == "finish" for c in made):
            resume.crash_point("after-repair-finish")
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


def drive_hydration(doc: Mapping[str, Any], pods: Sequence[PodObs],
                    statuses: Mapping[str, Mapping[str, Any] | None], spec: ClusterSpec,
                    event: Event, timeout: float) -> None:
    """Start (or restart after a failure) the rebuild of each new member's segment."""
    urls = {p.name: p.url for p in pods if statuses.get(p.name) is not None}
    for pg, m in pl.memberships(doc).items():
        if m.next_members is None:
            continue
        sources = {s: urls[s] for s in m.members if s in urls and s in m.next_members}
        for new in set(m.next_members) - set(m.members):
            state = hydration_state(statuses.get(new), pg)
            if new not in urls or state not in ("idle", "failed") or not sources:
                continue
            body = {"sources": sources, "bandwidth_bytes_per_s": parse_quantity(spec.rebuild_bandwidth)}
            try:
                http_json("POST", f"{urls[new]}/v1/segments/{pg}/hydrate", body, timeout=max(timeout, 5))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                event("Warning", "HydrateFailed", f"pg {pg} on {new}: {exc}")
                continue
            event("Normal", "Hydrating", f"pg {pg}: {new} rebuilding from {', '.join(sorted(sources))}")


def drop_orphans(doc: Mapping[str, Any], pods: Sequence[PodObs],
                 statuses: Mapping[str, Mapping[str, Any] | None], event: Event, timeout: float) -> None:
    """A pod that came back after its segment was moved away holds a stale copy: drop it
    (only when the placement's membership epoch is newer than the copy's)."""
    ms = pl.memberships(doc)
    for p in pods:
        st = statuses.get(p.name)
        for seg in (st or {}).get("segments", []):
            pg = int(seg["pg"])
            m = ms.get(pg)
            if m is None or p.name in m.all_members or int(seg.get("membership_epoch", 0)) >= m.epoch:
                continue
            try:
                http_json("DELETE", f"{p.url}/v1/segments/{pg}", timeout=max(timeout, 5))
            except (OSError, urllib.error.URLError, ValueError) as exc:
                event("Warning", "SegmentDeleteFailed", f"pg {pg} on {p.name}: {exc}")
                continue
            event("Normal", "SegmentDeleted", f"pg {pg}: dropped the stale copy on {p.name}")


def reconcile(kube: Kube, body: Mapping[str, Any], event: Event,
              settings: Settings | None = None) -> dict[str, Any]:
    """Converge one AuroraCluster; returns its new status."""
    settings = settings or Settings()
    spec = ClusterSpec.from_dict(body.get("spec") or {})
    backup = BackupSpec.from_spec(body.get("spec") or {})
    restore = RestoreSpec.from_spec(body.get("spec") or {})
    status = _reconcile(kube, body, event, settings, spec, backup, restore)
    return finish_status(kube, body, status, backup, restore, event)


def finish_status(kube: Kube, body: Mapping[str, Any], status: dict[str, Any], backup: BackupSpec,
                  restore: RestoreSpec | None, event: Event) -> dict[str, Any]:
    """Overlay status.backup (from the cluster's poller; never waits on S3) and the
    restore's progress (never Ready before the backup is loaded)."""
    meta = body["metadata"]
    name, ns, gen = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    old = dict(body.get("status") or {})
    if backup.enabled and backup.store is not None and restore is not None and \
            not restoreflow.restored(body, backupops.RESTORES.get(meta["uid"])):
        status["backup"] = {"target": backup.store.url, "state": "WaitingForRestore"}
    elif backup.enabled and backup.store is not None:
        poller = backupops.POLLERS.get(ns, name, backup.store, backup.retention_days, kube.core)
        status["backup"] = poller.block or {"target": backup.store.url, "state": "Active"}
    else:
        backupops.POLLERS.drop(ns, name)
    if restore is not None:
        job = backupops.RESTORES.get(meta["uid"])
        rs = restoreflow.restore_status(job, old, restore, event)
        status = apply_restore_status(status, rs, gen, old.get("conditions") or [], now_iso())
    return status


def _reconcile(kube: Kube, body: Mapping[str, Any], event: Event, settings: Settings, spec: ClusterSpec,
               backup: BackupSpec, restore: RestoreSpec | None) -> dict[str, Any]:
    meta = body["metadata"]
    name, ns, gen = meta["name"], meta["namespace"], int(meta.get("generation", 1))
    old = dict(body.get("status") or {})
    old.pop("kopf", None)
    with MEMORY.lock((ns, name)):
        zones, reason, msg = resolve_zones(spec, kube.ready_nodes_by_zone())
        existing = kube._read("ConfigMap", placement_name(name), ns)
        if zones is None and existing is None:
            # Nothing built yet and the spec cannot be satisfied: build nothing.
            if (old.get("conditions") or [{}])[0].get("reason") != reason:
                event("Warning", reason, msg)
            return compute_status(gen, None, None, [], {}, old, now_iso(), blocked=(reason, msg))
        job = None
        if restore is not None:
            job, build = restoreflow.pre_build(kube, body, spec, restore, backup, existing is not None, event)
            if not build:  # validating the source (or it failed): build nothing yet
                return compute_status(gen, zones, None, [], {}, old, now_iso(),
                                      progressing=("Restoring", job.message if job else ""))
        if zones is None:
            # Already built: keep running on the zones the placement names (a zone that
            # lost all nodes is a failure to ride out, not a reason to tear down).
            zones = sorted(pl.parse_configmap(existing)[0]["zones"])
        owner = {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": meta}
        actions, deferred = [], []
        progressing = None
        try:
            doc = ensure_placement(kube, body, zones, spec, event)
        except pl.Conflict as exc:
            event("Normal", "PlacementConflict", f"{exc}; retrying")
            doc = pl.parse_configmap(kube._read("ConfigMap", placement_name(name), ns))[0]
            progressing = ("PlacementConflict", str(exc))
        pods = kube.pods(name, ns)
        statuses = node_statuses(pods, settings.http_timeout)
        current = caught_up_segments(doc, statuses)
        all_healthy = bool(current) and all(n == SEGMENTS_PER_PG for n in current.values())
        # A restored volume's own backups start once it is loaded: uploads of a partial
        # load that is later wiped and redone would mix two histories in its prefix.
        pod_backup = backup if restore is None or restoreflow.restored(body, job) else None
        objs = desired_objects(name, ns, zones, spec, owner, settings.node_command, pod_backup)
        current_sts = {o["metadata"]["labels"][ZONE_POD_LABEL]: kube._read("StatefulSet", o["metadata"]["name"], ns)
                       for o in objs if o["kind"] == "StatefulSet"}
        rolled = False
        for obj in objs:
            if obj["kind"] == "StatefulSet":
                zone = obj["metadata"]["labels"][ZONE_POD_LABEL]
                allowed = not rolled and template_rollout_allowed(zone, current_sts, all_healthy)
                done = kube.ensure(obj, event, current_sts[zone], allowed)
                rolled = rolled or (done == "updated")
            else:
                done = kube.ensure(obj, event)
            if done == "deferred":
                deferred.append(obj["metadata"]["name"])
            elif done:
                actions.append(f"{done} {obj['kind']} {obj['metadata']['name']}")
        repairing: list[str] = []
        try:
            doc, repairing = run_repairs(kube, body, spec, doc, statuses, event)
        except pl.Conflict as exc:
            progressing = ("PlacementConflict", str(exc))
        created = ensure_segments(ns, doc, pods, statuses, event, settings.http_timeout,
                                  parse_quantity(spec.rebuild_bandwidth))
        if created:
            statuses = node_statuses(pods, settings.http_timeout)
        drive_hydration(doc, pods, statuses, spec, event, settings.http_timeout)
        drop_orphans(doc, pods, statuses, event, settings.http_timeout)
        if job is not None:
            restoreflow.post_observe(job, body, doc, pods, statuses, event, settings.http_timeout,
                                     MEMORY.applied)
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
        return compute_status(gen, zones, doc, pods, statuses, old, now_iso(),
                              progressing=progressing)


__all__ = ["Kube", "Settings", "reconcile", "owner_reference"]
