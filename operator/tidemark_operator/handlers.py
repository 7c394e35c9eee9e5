"""kopf handlers: thin; everything real happens in reconcile.py (objects, placement,
segments) and status.py (pure)."""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import time
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import backupops, metrics, snapshots
from .backupspec import SNAPSHOT_PLURAL
from .model import GROUP, PLURAL, VERSION
from .reconcile import Kube, Settings, reconcile

log = logging.getLogger("tidemark_operator")
SETTINGS = Settings(node_command=tuple(shlex.split(os.environ.get("TIDEMARK_NODE_COMMAND", "tidemark"))))
_KUBE: Kube | None = None
TIMER_INTERVAL = float(os.environ.get("TIDEMARK_OPERATOR_INTERVAL", "3"))


def kube() -> Kube:
    global _KUBE
    if _KUBE is None:
        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        _KUBE = Kube()
    return _KUBE


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90
    settings.persistence.finalizer = "tidemark.dev/operator"
    kube()


def _run(body: kopf.Body, patch: kopf.Patch, source: str) -> None:
    def event(type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", body.metadata.namespace, body.metadata.name, reason, message)
        if type_ == "Warning":
            kopf.warn(body, reason=reason, message=message)
        else:
            kopf.info(body, reason=reason, message=message)

    # Work from a fresh read: a timer may still fire for an object deleted meanwhile (a
    # zombie pass would recreate children owned by a dead uid), and the spec may be newer.
    try:
        fresh = kube().api.sanitize_for_serialization(client.CustomObjectsApi(kube().api).get_namespaced_custom_object(
            GROUP, VERSION, body.metadata.namespace, PLURAL, body.metadata.name, _request_timeout=10))
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    if fresh["metadata"].get("uid") != body.metadata.uid or fresh["metadata"].get("deletionTimestamp"):
        return
    started = time.monotonic()
    try:
        status = reconcile(kube(), fresh, event, SETTINGS)
    except Exception:
        metrics.record_reconcile(source, "error", time.monotonic() - started)
        raise
    metrics.record_reconcile(source, "ok", time.monotonic() - started)
    metrics.record_status(body.metadata.namespace, body.metadata.name, status)
    old = {k: v for k, v in (fresh.get("status") or {}).items() if k != "kopf"}
    if status != old:
        patch.status.update(status)
        for key in set(old) - set(status):
            patch.status[key] = None


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
def on_change(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        _run(body, patch, "change")
    except Exception as exc:
        raise kopf.TemporaryError(f"reconcile failed: {exc}", delay=3) from exc


@kopf.timer(GROUP, VERSION, PLURAL, interval=TIMER_INTERVAL, initial_delay=1.0)
def observe(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Continuous observation: pod and segment health, drift of owned objects, VDL."""
    if body.metadata.get("deletionTimestamp"):
        return
    _run(body, patch, "timer")


# -- AuroraSnapshot ------------------------------------------------------------------------------

def _events(body: kopf.Body) -> Any:
    def event(type_: str, reason: str, message: str) -> None:
        log.info("%s/%s %s: %s", body.metadata.namespace, body.metadata.name, reason, message)
        (kopf.warn if type_ == "Warning" else kopf.info)(body, reason=reason, message=message)
    return event


@kopf.on.resume(GROUP, VERSION, SNAPSHOT_PLURAL)
@kopf.on.create(GROUP, VERSION, SNAPSHOT_PLURAL, retries=20, backoff=10)
def snapshot_create(body: kopf.Body, retry: int, **_: Any) -> None:
    """Pending -> Ready, or Failed with a reason (retried: a backup that has no restorable
    point yet, or an unreachable store, may recover)."""
    if (body.get("status") or {}).get("phase") == "Ready":
        return
    raw = dict(body)
    event = _events(body)
    try:
        status = snapshots.create(kube().api, kube().core, raw, event)
    except Exception as exc:
        reason = exc.reason if isinstance(exc, snapshots.SnapshotFailed) else "SnapshotError"
        msg = f"{exc}"[:1000] or type(exc).__name__
        event("Warning", reason, msg)
        with contextlib.suppress(Exception):
            snapshots.patch_status(kube().api, raw, {"phase": "Failed", "reason": reason, "message": msg,
                                                      "attempts": retry + 1})
        raise kopf.TemporaryError(msg, delay=10) from exc
    snapshots.patch_status(kube().api, raw, {**status, "reason": None, "attempts": retry + 1})


@kopf.on.delete(GROUP, VERSION, SNAPSHOT_PLURAL, retries=12, backoff=5)
def snapshot_delete(body: kopf.Body, **_: Any) -> None:
    """The finalizer: the snapshot's objects go with the resource."""
    event = _events(body)
    try:
        snapshots.delete(kube().core, dict(body), event)
    except ApiException as exc:
        if exc.status == 404:  # the credentials Secret is gone: the objects cannot be reached
            event("Warning", "SnapshotOrphaned", f"cannot delete the snapshot's objects: {exc.reason}")
            return
        raise kopf.TemporaryError(f"snapshot delete failed: {exc}", delay=5) from exc
    except Exception as exc:
        event("Warning", "SnapshotDeleteFailed", str(exc)[:500])
        raise kopf.TemporaryError(f"snapshot delete failed: {exc}", delay=5) from exc


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def cluster_deleted(body: kopf.Body, **_: Any) -> None:
    """Stop the backup poller and forget a restore job of a deleted cluster."""
    backupops.POLLERS.drop(body.metadata.namespace, body.metadata.name)
    backupops.RESTORES.drop(body.metadata.uid)
