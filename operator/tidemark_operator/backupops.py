"""The operator's side of backups, off the kopf event loop and off the reconcile pass:
opening a backup store with a Secret's keys, a per-cluster poller of the backup's
recoverability and storage metrics, and restore jobs (validate, then load into the new
cluster's empty pods through tidemark_backup.restore.restore_into)."""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from .backupspec import ACCESS_KEY, SECRET_KEY, StoreRef, progress_text

log = logging.getLogger("tidemark_operator")
POLL_INTERVAL = float(os.environ.get("TIDEMARK_OPERATOR_BACKUP_POLL", "10"))
RETRY_DELAY = float(os.environ.get("TIDEMARK_OPERATOR_RESTORE_RETRY", "20"))
_CLIENT_LOCK = threading.Lock()


def read_credentials(core: Any, ns: str, secret: str | None) -> tuple[str | None, str | None]:
    """(access key, secret key) from the Secret (None: the default boto3 chain)."""
    if not secret:
        return None, None
    data = core.read_namespaced_secret(secret, ns, _request_timeout=10).data or {}
    missing = [k for k in (ACCESS_KEY, SECRET_KEY) if k not in data]
    if missing:
        raise ValueError(f"Secret {secret} lacks {', '.join(missing)}")
    return (base64.b64decode(data[ACCESS_KEY]).decode(), base64.b64decode(data[SECRET_KEY]).decode())


def open_ref(core: Any, ns: str, ref: StoreRef, timeout: float = 5.0) -> Any:
    """An ObjStore for REF with the Secret's keys passed explicitly (the operator serves
    many clusters with different credentials: never through its own environment)."""
    from tidemark_backup.objstore import FileStore, S3Store

    u = urlparse(ref.url)
    if u.scheme == "file":
        return FileStore(ref.url, Path(u.path))
    access, secret = read_credentials(core, ns, ref.credentials_secret)
    with _CLIENT_LOCK:  # boto3's default session is not thread-safe while creating clients
        return S3Store(ref.url, u.netloc, u.path, ref.endpoint, access, secret, timeout=timeout)


# -- status.backup poller --------------------------------------------------------------------

STATUS_KEYS = ("firstRecoverableTime", "latestRestorableTime", "lastSuccessfulUpload", "lastError",
               "BackupRetentionPeriodStorageUsed", "SnapshotStorageUsed", "TotalBackupStorageBilled",
               "VolumeBytesUsed")


def backup_block(out: Mapping[str, Any] | None, error: str | None, target: str, checked: str | None,
                 node_error: str | None = None) -> dict[str, Any]:
    """status.backup from the last poll (pure). A store error wins lastError; then the
    nodes' uploaders' last error; then the bucket's first problem."""
    st: dict[str, Any] = {"target": target, "lastChecked": checked, "state": "Active"}
    for k in STATUS_KEYS:
        st[k] = (out or {}).get(k)
    st["lastError"] = error or node_error or st["lastError"]
    return st


@dataclass
class Poller:
    """Polls one cluster's backup every POLL_INTERVAL seconds in a daemon thread; the
    reconcile pass only reads `.block` (never waits on S3)."""

    ns: str
    ref: StoreRef
    retention_days: int
    core: Any
    block: dict[str, Any] | None = None
    touched: float = field(default_factory=time.monotonic)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        threading.Thread(target=self._loop, name=f"backup-poll-{self.ns}", daemon=True).start()

    def _loop(self) -> None:
        from tidemark_backup.cli import status_of_store

        while not self.stop.is_set():
            if time.monotonic() - self.touched > max(60.0, 6 * POLL_INTERVAL):
                return  # the cluster is gone or no longer backed up
            checked = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            try:
                store = open_ref(self.core, self.ns, self.ref)
                out, err = status_of_store(store, float(self.retention_days)), None
                problems = out.get("problems") or []
                out["lastError"] = problems[0] if problems else None
            except Exception as exc:  # noqa: BLE001 - any store failure is reported, not raised
                out, err = None, f"{type(exc).__name__}: {exc}"[:500]
            prev = self.block or {}
            block = backup_block(out, err, self.ref.url, checked)
            if out is None:  # keep the last known window and metrics while the store is away
                block.update({k: prev.get(k) for k in STATUS_KEYS if k != "lastError"})
            self.block = block
            self.stop.wait(POLL_INTERVAL)


class Pollers:
    def __init__(self) -> None:
        self._pollers: dict[tuple[str, str], Poller] = {}
        self._lock = threading.Lock()

    def get(self, ns: str, name: str, ref: StoreRef, retention_days: int, core: Any) -> Poller:
        with self._lock:
            p = self._pollers.get((ns, name))
            if p is None or p.ref != ref or p.retention_days != retention_days or p.stop.is_set() \
                    or time.monotonic() - p.touched > max(60.0, 6 * POLL_INTERVAL):
                if p is not None:
                    p.stop.set()
                p = Poller(ns, ref, retention_days, core)
                self._pollers[(ns, name)] = p
                p.start()
            p.touched = time.monotonic()
            return p

    def drop(self, ns: str, name: str) -> None:
        with self._lock:
            p = self._pollers.pop((ns, name), None)
        if p is not None:
            p.stop.set()


POLLERS = Pollers()


# -- restore jobs ----------------------------------------------------------------------------

@dataclass
class RestoreJob:
    """One restore of one AuroraCluster (keyed by uid). States: validating -> validated
    -> loading -> done, or failed (retried after RETRY_DELAY)."""

    state: str = "validating"
    message: str = "reading the source backup"
    lsn: int | None = None
    t_us: int | None = None
    layout: dict[str, Any] | None = None
    progress: str = ""
    result: dict[str, Any] | None = None
    failed_at: float = 0.0
    failed_in: str = ""  # "validate" or "load"
    needs_wipe: bool = False  # pods may hold a partial load (interrupted or failed)
    attempt: int = 1
    store: Any = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, where: str, msg: str) -> None:
        self.state, self.message, self.failed_at, self.failed_in = "failed", msg, time.monotonic(), where
        if where == "load":
            self.needs_wipe = True


def validate(job: RestoreJob, open_source: Callable[[], tuple[Any, StoreRef]],
             spec_layout: Mapping[str, Any], t_us: int | None, own_backup: StoreRef | None) -> None:
    """Thread body: the source is reachable, T lies in its window and its layout is the
    new cluster's (refuse otherwise: the volume layout is immutable)."""
    from tidemark_backup.restore import RestoreError, iso, load_inventory

    try:
        store, ref = open_source()
        from .backupspec import same_store

        if same_store(ref, own_backup):
            raise RestoreError(f"spec.backup.target {own_backup.url} is the restore source's: "
                               "a restored cluster needs its own backup prefix")
        inv = load_inventory(store)
        if inv.layout is None:
            raise RestoreError(f"no PG manifest in {ref.url}: nothing to restore")
        lay = inv.layout.to_json()
        if any(int(lay[k]) != int(spec_layout[k]) for k in spec_layout if k in lay):
            raise RestoreError(f"the backup's volume layout {lay} differs from spec.volume "
                               f"{dict(spec_layout)}: set spec.volume to the backup's layout")
        first, latest = inv.window()
        t = t_us if t_us is not None else latest
        if t is None:
            raise RestoreError("the backup has no restorable point yet")
        lsn = inv.lsn_for(t)
        with job.lock:
            job.store, job.lsn, job.t_us, job.layout = store, lsn, t, lay
            job.state, job.message = "validated", (f"restoring {iso(t)} (LSN {lsn}); window "
                                                   f"[{iso(first)}, {iso(latest)}]; waiting for the new pods")
    except Exception as exc:  # noqa: BLE001 - every failure becomes a clear status message
        with job.lock:
            job.fail("validate", f"{type(exc).__name__}: {exc}"[:1000])


def load(job: RestoreJob, topology: Any) -> None:
    """Thread body: restore_into the new cluster's empty pods."""
    from tidemark_backup.restore import restore_into

    def progress(phase: str, done: int, total: int) -> None:
        job.progress = progress_text(phase, done, total)

    try:
        result = restore_into(job.store, job.t_us, topology, progress)
        with job.lock:
            job.result, job.state, job.message = result, "done", "restore complete"
    except Exception as exc:  # noqa: BLE001
        with job.lock:
            job.fail("load", f"{type(exc).__name__}: {exc}"[:1000])


class Restores:
    def __init__(self) -> None:
        self.jobs: dict[str, RestoreJob] = {}
        self.guard = threading.Lock()

    def get(self, uid: str) -> RestoreJob | None:
        with self.guard:
            return self.jobs.get(uid)

    def create(self, uid: str, **kw: Any) -> RestoreJob:
        with self.guard:
            job = self.jobs[uid] = RestoreJob(**kw)
            return job

    def drop(self, uid: str) -> None:
        with self.guard:
            self.jobs.pop(uid, None)


RESTORES = Restores()


def spawn(fn: Callable[..., None], *args: Any, name: str) -> None:
    threading.Thread(target=fn, args=args, name=name, daemon=True).start()
