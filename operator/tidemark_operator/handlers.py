"""kopf handlers: thin; everything real happens in reconcile.py (objects, placement,
segments) and status.py (pure)."""

from __future__ import annotations

import logging
import os
import shlex
import time
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from . import metrics
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
