"""The writer lease on Kubernetes: a coordination.k8s.io/v1 Lease naming the volume's
current writer instance (holderIdentity = its pod), with the volume epoch it sealed and
its replica feed URL in annotations (this module is their one home).

What `lease.py`'s file is to a playground, this is to an AuroraCluster:
- `KubeWriterLease` (a writer): claimed right after `Writer.open` (the new epoch is the
  newest: it just sealed), renewed every RENEW_EVERY seconds by compare-and-swap on
  resourceVersion. `holds()` (before every answer, never blocking: it reads what the
  renewal task last saw) is False once the Lease names a newer epoch, or when no renewal
  succeeded for the lease duration: a writer cut off from the apiserver stops answering
  before a successor's clients could see it. Commits of a superseded writer are refused
  by the nodes anyway (volume epoch); the lease bounds its stale reads.
- `LeaseFeed` (a replica): the writer's feed URL, re-read every second, so a replica
  follows a new writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import structlog

EPOCH_ANNOTATION = "tidemark.dev/volume-epoch"
FEED_ANNOTATION = "tidemark.dev/feed"
DURATION = 10  # seconds without a successful renewal before the writer stops answering
RENEW_EVERY = 1.0
TIMEOUT = 5

log = structlog.get_logger("tidemark.sql.kube_lease")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of a kubernetes ApiException, by attribute: importing the
    kubernetes client costs ~0.5 s, which a playground instance must not pay."""
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) else None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def lease_epoch(lease: Any) -> int:
    return int(((lease.metadata.annotations or {}).get(EPOCH_ANNOTATION)) or -1)


def lease_feed(lease: Any) -> str | None:
    return (lease.metadata.annotations or {}).get(FEED_ANNOTATION)


class Superseded(Exception):
    """The Lease names a newer writer."""


class KubeWriterLease:
    def __init__(self, api: Any, namespace: str, name: str, identity: str, epoch: int,
                 duration: int = DURATION) -> None:
        """api: a kubernetes CoordinationV1Api."""
        self.api, self.namespace, self.name = api, namespace, name
        self.identity, self.epoch, self.duration = identity, epoch, duration
        self.feed = ""
        self.superseded = False
        self._renewed = float("-inf")
        self._successor_seen = float("-inf")  # last change of the Lease by the writer that superseded us
        self._successor_rv: str | None = None
        self._task: asyncio.Task[None] | None = None

    def _body(self, rv: str | None, transitions: int, acquired: str | None) -> dict[str, Any]:
        now = _now()
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace,
                                "annotations": {EPOCH_ANNOTATION: str(self.epoch), FEED_ANNOTATION: self.feed}}
        if rv is not None:
            meta["resourceVersion"] = rv
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta,
                "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                         "acquireTime": acquired or now, "renewTime": now, "leaseTransitions": transitions}}

    def _write(self) -> None:
        """One CAS round: create, or replace the version read. Superseded if it names a
        newer epoch; ApiException 409 if it changed meanwhile."""
        started = time.monotonic()
        try:
            cur = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=TIMEOUT)
        except Exception as exc:
            if _status(exc) != 404:
                raise
            self.api.create_namespaced_lease(self.namespace, self._body(None, 0, None), _request_timeout=TIMEOUT)
            self._renewed = started
            return
        if lease_epoch(cur) > self.epoch:
            raise Superseded(f"lease {self.name} names volume epoch {lease_epoch(cur)} "
                             f"(holder {cur.spec.holder_identity}), ours is {self.epoch}")
        ours = cur.spec.holder_identity == self.identity and lease_epoch(cur) == self.epoch
        transitions = int(cur.spec.lease_transitions or 0) + (0 if ours else 1)
        acquired = cur.spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ours and cur.spec.acquire_time else None
        self.api.replace_namespaced_lease(self.name, self.namespace,
                                          self._body(cur.metadata.resource_version, transitions, acquired),
                                          _request_timeout=TIMEOUT)
        self._renewed = started

    async def claim(self, feed: str) -> None:
        """Name ourselves the writer; then keep renewing in the background (or, if a
        newer writer holds the Lease already, watching whether it still renews)."""
        self.feed = feed
        for _ in range(20):
            try:
                await asyncio.to_thread(self._write)
            except Superseded as exc:
                self._supersede(str(exc))
                break
            except Exception as exc:
                if _status(exc) != 409:
                    raise
                continue
            log.info("writer_lease_claimed", lease=self.name, holder=self.identity, volume_epoch=self.epoch)
            break
        else:
            raise RuntimeError(f"lease {self.name}: could not claim it (changed 20 times in a row)")
        self._task = asyncio.create_task(self._renew())

    def _supersede(self, why: str) -> None:
        if not self.superseded:
            log.error("writer_lease_lost", reason=why)
            self._successor_seen = time.monotonic()
        self.superseded = True

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if self.superseded:
                    await asyncio.to_thread(self._watch_successor)
                else:
                    await asyncio.to_thread(self._write)
            except Superseded as exc:
                self._supersede(str(exc))
            except Exception as exc:  # noqa: BLE001 - apiserver blips: holds() expires on its own
                log.warning("writer_lease_renew_failed", error=repr(exc)[:300])

    def _watch_successor(self) -> None:
        """Superseded: note when the newer writer last renewed (by resourceVersion, on our
        own clock: no clock skew between pods matters)."""
        cur = self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=TIMEOUT)
        if cur.metadata.resource_version != self._successor_rv:
            self._successor_rv = cur.metadata.resource_version
            self._successor_seen = time.monotonic()

    @property
    def successor_gone(self) -> bool:
        """Superseded, and the Lease has not been renewed for its duration: the newer
        writer is gone too, so nobody serves the volume (its pod should restart us)."""
        return self.superseded and time.monotonic() - self._successor_seen >= self.duration

    @property
    def expired(self) -> bool:
        return time.monotonic() - self._renewed >= self.duration

    def holds(self) -> bool:
        return not self.superseded and not self.expired

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class LeaseFeed:
    """A replica's view of the writer Lease: the current writer's feed URL."""

    def __init__(self, api: Any, namespace: str, name: str, every: float = 1.0) -> None:
        self.api, self.namespace, self.name, self.every = api, namespace, name, every
        self.feed: str | None = None
        self._task: asyncio.Task[None] | None = None

    def _read(self) -> str | None:
        try:
            return lease_feed(self.api.read_namespaced_lease(self.name, self.namespace, _request_timeout=TIMEOUT))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise

    async def start(self) -> None:
        with contextlib.suppress(Exception):
            self.feed = await asyncio.to_thread(self._read)
        self._task = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            try:
                self.feed = await asyncio.to_thread(self._read) or self.feed
            except Exception as exc:  # noqa: BLE001 - keep the last known feed
                log.warning("writer_lease_read_failed", error=repr(exc)[:300])

    def __call__(self) -> str | None:
        return self.feed

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
