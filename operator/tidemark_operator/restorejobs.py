"""A restore cluster's two long steps, each in a thread of its own (off kopf's event loop
and off the reconcile pass): validate the source backup, then load it into the new
cluster's empty pods through tidemark_restore.install.restore_into. A RestoreJob (in the
cluster's memo) carries their outcome to the next passes."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tidemark_compute.topology import Topology
from tidemark_restore.install import restore_into
from tidemark_restore.inventory import RestoreError, iso, load_inventory

from .backupspec import StoreRef, same_store
from .status import progress_text

RETRY_DELAY = float(os.environ.get("TIDEMARK_OPERATOR_RESTORE_RETRY", "20"))


@dataclass
class RestoreJob:
    """One restore of one AuroraCluster. States: validating -> validated -> loading ->
    done, or failed (retried after RETRY_DELAY, doubling)."""

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
    try:
        store, ref = open_source()
        if same_store(ref, own_backup):
            assert own_backup is not None
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


def load(job: RestoreJob, topology: Topology) -> None:
    """Thread body: restore_into the new cluster's empty pods."""

    def progress(phase: str, done: int, total: int) -> None:
        job.progress = progress_text(phase, done, total)

    try:
        assert job.t_us is not None
        result = restore_into(job.store, job.t_us, topology, progress)
        with job.lock:
            job.result, job.state, job.message = result, "done", "restore complete"
    except Exception as exc:  # noqa: BLE001
        with job.lock:
            job.fail("load", f"{type(exc).__name__}: {exc}"[:1000])


def spawn(fn: Callable[..., None], *args: Any, name: str) -> None:
    threading.Thread(target=fn, args=args, name=name, daemon=True).start()
