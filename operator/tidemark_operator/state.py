"""What the operator process remembers about one AuroraCluster between passes, kept in
kopf's per-object memo (forgotten with the object and on restart: every item is either
re-derived from the cluster or harmless to lose, see each field)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from dataclasses import dataclass, field
from typing import Any

from tidemark_protocol.node_auth import NodeCredentials

from .backupspec import StoreRef
from .refusals import Refusal
from .restorejobs import RestoreJob

MEMO_KEY = "tidemark_cluster"


@dataclass(frozen=True)
class LeaseSeen:
    """The writer Lease as the writer_watch daemon last read it: who holds it, its
    version, and when (monotonic) this process first saw that version."""

    holder: str | None
    version: str | None
    since: float
    duration: float


@dataclass
class ClusterState:
    # (pod, pg) -> "<node generation>:<membership+peers>" already PUT: lost on restart,
    # then re-sent (segment PUTs are idempotent)
    applied: dict[tuple[str, int], str] = field(default_factory=dict)
    # pod -> monotonic time it stopped answering: a restart restarts the clock (conservative)
    unhealthy_since: dict[str, float] = field(default_factory=dict)
    # pg -> membership epoch of the repair this process knows about (begun or resumed)
    known_repairs: dict[int, int] = field(default_factory=dict)
    # this process's restore of the cluster (status.restore persists the outcome)
    restore: RestoreJob | None = None
    # status.backup from the backup daemon's last poll (None: no poll yet) and the
    # (store, retention days) it polled
    backup_block: dict[str, Any] | None = None
    backup_of: tuple[StoreRef, int] | None = None
    # the writer Lease's holder last seen serving, and (monotonic) when it was first seen
    # not serving or deleted: the Failover event's duration (lost on restart: no event then)
    primary: str | None = None
    primary_lost_at: float | None = None
    # the writer pod the last switchover started here stopped (no Failover event for it)
    switched_from: str | None = None
    # the writer Deployment's new template waits for the replicas (RollingUpdate event once)
    writer_held: bool = False
    # the writer Lease as the writer_watch daemon last read it (lost on restart: its
    # clock starts again, a full lease duration)
    lease_seen: LeaseSeen | None = None
    # the last pass's refusal by the apiserver (one event per distinct refusal: a pass
    # may read the status before the last one's patch)
    refusal: Refusal | None = None
    # writer pods deleted for an unrenewed Lease (one event, one delete each)
    evicted_writers: set[str] = field(default_factory=set)
    # of those, the ones deleted with their grace period, not yet at grace 0, and
    # (monotonic) since when (lost on restart: the status pass deletes them at grace 0
    # once their node is NotReady)
    # (instances.InstancePod, since): typed loosely, as instances imports this module
    replacing: dict[str, tuple[Any, float]] = field(default_factory=dict)
    # the tokens for the cluster's nodes, from its node-auth Secret (lost on restart, and
    # dropped after a pass a node refused them in: read again)
    node_credentials: NodeCredentials | None = field(default=None, repr=False)
    # trust for the cluster's nodes (its node-tls Secret's CA) and when the serving
    # certificate there expires (the pass re-issues it RENEW_BEFORE that; lost on restart)
    node_tls: ssl.SSLContext | None = field(default=None, repr=False)
    node_tls_expiry: dt.datetime | None = None
    # the cluster's CA certificate (PEM, public) and when the instances' certificate in
    # `<cluster>-instance-tls` expires (instance_tls_access.py; lost on restart)
    cluster_ca_pem: str | None = None
    instance_tls_expiry: dt.datetime | None = None
    # one pass at a time (the change handlers and the timer may fire together)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def cluster_state(memo: Any) -> ClusterState:
    """The cluster's state in its kopf memo (created on first use)."""
    st = memo.get(MEMO_KEY)
    if st is None:
        st = memo[MEMO_KEY] = ClusterState()
    return st
