"""The database instances of an AuroraCluster, one pass: the credentials Secret, the
instance objects (instance_resources.py) and what the instances report (their admin
`/v1/status` and the writer Lease) for status.instances.

The operator never opens the volume and never speaks SQL; failover is the writer
Deployment's ReplicaSet starting a new writer pod (recovery + seal + Lease claim), see
instance_resources.py."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from . import instance_resources as ir
from .kube import Kube
from .model import SQL_ADMIN_PORT, app_secret_name, instance_deployment_name, writer_lease_name
from .nodeclient import NodeClient, NodeError
from .spec import ClusterSpec
from .state import ClusterState

Event = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass(frozen=True)
class InstancePod:
    name: str
    role: str
    ip: str | None
    running: bool
    node: str | None = None
    tls: bool = False  # its admin endpoint is https (its command has --tls-cert; older pods: http)

    @property
    def admin_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.ip}:{SQL_ADMIN_PORT}"


def wanted(kube: Kube, cluster: str, ns: str, spec: ClusterSpec) -> bool:
    """Instances are managed when asked for, or when some exist (scaling to 0 keeps the
    Deployments, at 0 replicas)."""
    return spec.instances > 0 or kube.exists("Deployment", instance_deployment_name(cluster, "writer"), ns)


def ensure_credentials(kube: Kube, cluster: str, ns: str, spec: ClusterSpec, owner: Mapping[str, Any],
                       event: Event) -> str | None:
    """Create `<cluster>-app` with a generated password when the spec names no Secret.
    Returns why the instances cannot start yet (a named Secret that does not exist)."""
    if spec.instance.credentials_secret:
        if not kube.exists("Secret", spec.instance.credentials_secret, ns):
            return f"credentials Secret {spec.instance.credentials_secret} not found"
        return None
    name = app_secret_name(cluster)
    if not kube.exists("Secret", name, ns):
        kube.create(ir.app_secret(cluster, ns, secrets.token_urlsafe(24), owner))
        event("Normal", "Created", f"created Secret {name} (user {ir.APP_USER}; keys username, password, "
                                   "uri, pgpass)")
    return None


def lease_holder(kube: Kube, cluster: str, ns: str) -> str | None:
    lease = kube.read("Lease", writer_lease_name(cluster), ns)
    return ((lease or {}).get("spec") or {}).get("holderIdentity")


def admin_client(nodes: NodeClient, state: ClusterState) -> NodeClient:
    """For the instances' admin endpoints: no token; their certificate verified against
    the cluster's CA (known once a pass read it), chain only: they are dialled by pod IP."""
    return nodes.for_cluster(None, state.node_tls)


async def observe(nodes: NodeClient, pods: Sequence[InstancePod]) -> dict[str, dict[str, Any] | None]:
    """Each running instance's admin /v1/status (None: not answering). NODES: an
    admin_client view."""
    async def one(p: InstancePod) -> dict[str, Any] | None:
        if not p.running:
            return None
        try:
            st = await nodes.call("GET", f"{p.admin_url}/v1/status", timeout=nodes.status_timeout)
        except NodeError:
            return None
        return st if isinstance(st, dict) else None

    results = await asyncio.gather(*(one(p) for p in pods))
    return {p.name: st for p, st in zip(pods, results, strict=True)}


def instances_status(spec: ClusterSpec, pods: Sequence[InstancePod], seen: Mapping[str, dict[str, Any] | None],
                     holder: str | None, blocked: str | None) -> dict[str, Any]:
    """status fields: readyInstances, currentPrimary, instances (name, role, serving, lag)."""
    listed = []
    serving = 0
    for p in sorted(pods, key=lambda p: (p.role != "writer", p.name)):
        st = seen.get(p.name) or {}
        ok = bool(st.get("serving")) and (p.role == "writer" and p.name == holder or
                                           p.role == "replica" and
                                           float(st.get("lag_ms") or 0) <= spec.instance.max_lag_ms)
        serving += ok
        item: dict[str, Any] = {"name": p.name, "role": p.role, "serving": ok}
        if p.node:
            item["node"] = p.node
        if st.get("lag_ms") is not None:
            item["lagMs"] = st["lag_ms"]
        if st.get("volume_epoch") is not None:
            item["volumeEpoch"] = st["volume_epoch"]
        listed.append(item)
    out: dict[str, Any] = {"readyInstances": f"{serving}/{spec.instances}", "instances": listed}
    if holder:
        out["currentPrimary"] = out["targetPrimary"] = holder
    if blocked:
        out["instancesBlocked"] = blocked
    return out


def evict_from_lost_nodes(kube: Kube, ns: str, pods: Sequence[InstancePod], event: Event) -> list[str]:
    """Instance pods on a node that is not Ready are deleted at once (grace 0): their
    Deployment starts new ones on Ready nodes. Nothing waits for the taint-based eviction
    (5 min by default): a writer on a lost node is the failover. Safe because a writer
    process that still runs there is fenced by the new writer's volume epoch and stops
    answering when the Lease moves or it cannot renew it. Storage pods are never touched
    here (their segments are repaired, see repairs.py)."""
    lost = kube.lost_nodes()
    gone = []
    for p in pods:
        if p.node and p.node in lost and force_delete(kube, p, ns, event):
            what = "writer" if p.role == "writer" else "replica"
            event("Warning", "InstanceNodeLost", f"{what} pod {p.name} on node {p.node} (not Ready) deleted: "
                                                 f"a new {what} starts on a Ready node")
            gone.append(p.name)
    return gone


def force_delete(kube: Kube, pod: InstancePod, ns: str, event: Event, now: bool = True) -> bool:
    """Delete POD now (grace 0; NOW False: with the pod's own grace period); False, with a
    PermissionDenied event, when the operator's role may not: not a reason to fail the
    whole pass (status would stop moving)."""
    try:
        (kube.force_delete_pod if now else kube.delete_pod)(pod.name, ns)
    except ApiException as exc:
        if exc.status != 403:
            raise
        event("Warning", "PermissionDenied", f"cannot delete {pod.role} pod {pod.name} on node {pod.node}: the "
                                             "operator's role lacks pods/delete; the failover waits for "
                                             "Kubernetes' own eviction (5 min by default)")
        return False
    return True


LEASE_GRACE_S = 5.0  # beyond the Lease's own duration: a writer that renews late is not cut off


def evict_expired_writer(kube: Kube, cluster: str, ns: str, pods: Sequence[InstancePod],
                         seen: Mapping[str, dict[str, Any] | None], event: Event, now: float) -> list[str]:
    """The writer pod whose Lease went unrenewed for its duration plus a grace, and whose
    admin endpoint does not answer, is deleted at once (grace 0): its Deployment starts a
    new writer. A node that died takes ~40 s to turn NotReady (evict_from_lost_nodes);
    the Lease says it sooner. Safe for the same reason: a writer process still running
    there has stopped answering (it does when it cannot renew) and is fenced by the new
    writer's volume epoch."""
    lease = kube.read("Lease", writer_lease_name(cluster), ns) or {}
    spec = lease.get("spec") or {}
    holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
    pod = next((p for p in pods if p.name == holder and p.role == "writer"), None)
    if pod is None or not renewed or seen.get(pod.name) is not None:
        return []
    age = now - datetime.fromisoformat(str(renewed).replace("Z", "+00:00")).timestamp()
    if age <= float(spec.get("leaseDurationSeconds") or 10) + LEASE_GRACE_S:
        return []
    if not force_delete(kube, pod, ns, event):
        return []
    event("Warning", "WriterLeaseExpired", f"writer pod {pod.name} (node {pod.node}) has not renewed "
                                           f"{writer_lease_name(cluster)} for {age:.0f} s and does not answer: "
                                           "deleted, a new writer starts")
    return [pod.name]


def note_primary(state: ClusterState, holder: str | None, serving: bool, event: Event,
                 planned: Set[str] = frozenset()) -> None:
    """Emit `Failover` (with the time from the old writer's loss to the new one serving,
    as seen by the passes) when the Lease's holder changes, unless the old writer is one
    a requested switchover stopped (PLANNED; switchover.py reports those)."""
    now = time.monotonic()
    if holder is not None and serving:
        if state.primary is not None and holder != state.primary and state.primary not in planned:
            lost = state.primary_lost_at or now
            event("Normal", "Failover", f"writer moved from {state.primary} to {holder}: serving again "
                                        f"{now - lost:.1f} s after the old writer was lost")
        state.primary, state.primary_lost_at = holder, None
    elif state.primary is not None and state.primary_lost_at is None:
        state.primary_lost_at = now
