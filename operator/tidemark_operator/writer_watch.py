"""The writer Lease, watched every WATCH_EVERY seconds by a kopf daemon per AuroraCluster
with instances (handlers.writer_watch): a writer that stopped renewing it is replaced
within about a second of its duration running out, not at the next status pass (a pass
of a cluster with a dead worker takes seconds, and waits `--interval` after the last).

The Lease's age is measured on this process's monotonic clock, from when it first saw
the Lease's current resourceVersion (as kube_lease.KubeWriterLease watches a successor):
no clock skew between the writer's node and the operator's enters. The writer stops
answering on its own once no renewal succeeded for the duration (it renews every second;
its last success started before this process could see it), so when the Lease has
looked unchanged here for its duration plus WATCH_GRACE_S, a writer process that still
runs has already stopped serving. It is deleted only if its admin endpoint does not
answer either: a live writer that renews late is left alone. The new writer's
`Writer.open` fences the old one on every node (volume epoch); nothing here weakens that.

The delete is in two steps. First with the pod's grace period: its ReplicaSet starts a
replacement at once, and the scheduler, which counts terminating pods for the writer's
required anti-affinity (instance_resources.py), keeps it off the old pod's worker; a
dead worker still looks Ready for ~40 s and would otherwise be an attractive, empty
node. Then, once the replacement is placed (or after PLACE_WAIT_S), at grace 0: the
dead worker's kubelet never confirms, and `kubectl port-forward svc/…` would keep
picking the old pod.

After a restart of the operator the clock starts again (conservative: a full duration);
the status pass's wall-clock check (instances.evict_expired_writer) remains as well."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import instances
from .instances import InstancePod
from .kube import Kube
from .model import writer_lease_name
from .nodeclient import NodeClient
from .state import ClusterState, LeaseSeen

Event = Callable[[str, str, str], None]  # (type, reason, message)

WATCH_EVERY = 1.0  # seconds between two reads of the Lease
# beyond the Lease's duration, on this process's clock: this poll's own lag (one period
# plus an apiserver round trip) and the writer's renewal period, so a writer whose last
# renewal this process saw late is not cut off while it may still serve
WATCH_GRACE_S = 2.0
DEFAULT_DURATION = 10.0
PLACE_WAIT_S = 5.0  # at most, between the graceful delete and the one at grace 0


def seen_now(prev: LeaseSeen | None, lease: Mapping[str, Any] | None, now: float) -> LeaseSeen | None:
    """PREV updated with LEASE as read at NOW (None: no Lease)."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    version = (lease.get("metadata") or {}).get("resourceVersion")
    duration = float(spec.get("leaseDurationSeconds") or DEFAULT_DURATION)
    if prev is not None and (prev.holder, prev.version) == (holder, version):
        return LeaseSeen(holder, version, prev.since, duration)
    return LeaseSeen(holder, version, now, duration)


def stale_holder(seen: LeaseSeen | None, now: float) -> str | None:
    """The holder of a Lease unchanged here for its duration plus the grace."""
    if seen is None or seen.holder is None or now - seen.since <= seen.duration + WATCH_GRACE_S:
        return None
    return seen.holder


async def finish_deletes(kube: Kube, state: ClusterState, ns: str, pods: Sequence[InstancePod],
                         event: Event, now: float) -> None:
    """Writer pods deleted with their grace: at grace 0 once a successor is placed on a
    node (or after PLACE_WAIT_S)."""
    for name, (pod, since) in list(state.replacing.items()):
        placed = any(p.role == "writer" and p.name != name and p.node for p in pods)
        if placed or now - since > PLACE_WAIT_S or all(p.name != name for p in pods):
            await asyncio.to_thread(instances.force_delete, kube, pod, ns, event)
            del state.replacing[name]


async def check(kube: Kube, nodes: NodeClient, state: ClusterState, cluster: str, ns: str,
                pods: Sequence[InstancePod], event: Event) -> str | None:
    """One look at the Lease; the name of the writer pod deleted, if one was. NODES: an
    instances.admin_client view."""
    await finish_deletes(kube, state, ns, pods, event, time.monotonic())
    lease = await asyncio.to_thread(kube.read, "Lease", writer_lease_name(cluster), ns)
    now = time.monotonic()
    state.lease_seen = seen_now(state.lease_seen, lease, now)
    holder = stale_holder(state.lease_seen, now)
    pod = next((p for p in pods if p.name == holder and p.role == "writer"), None)
    if pod is None or pod.name in state.evicted_writers:
        return None
    if pod.tls and state.node_tls is None:
        return None  # its CA not read yet (a pass does within an interval): "not answering" would be a guess
    if (await instances.observe(nodes, [pod])).get(pod.name) is not None:
        return None  # it answers: alive, whatever its Lease says
    if not await asyncio.to_thread(instances.force_delete, kube, pod, ns, event, False):
        return None
    state.evicted_writers.add(pod.name)
    state.replacing[pod.name] = (pod, time.monotonic())
    age = time.monotonic() - state.lease_seen.since if state.lease_seen else 0.0
    event("Warning", "WriterLeaseExpired", f"writer pod {pod.name} (node {pod.node}) has not renewed "
                                           f"{writer_lease_name(cluster)} for {age:.0f} s and does not answer: "
                                           "deleted, a new writer starts on another node")
    return pod.name
