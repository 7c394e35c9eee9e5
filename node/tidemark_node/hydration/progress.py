"""The `hydration` dict shown in /v1/status while a segment is rebuilt."""

from __future__ import annotations

import time

import structlog

from tidemark_protocol.hydration import HydrationState

from ..segments import Segment

log = structlog.get_logger("tidemark.node.hydrate")

AVG_RECORD_GUESS = 128


class Progress:
    """The `hydration` dict shown in /v1/status, plus the estimate behind `total_bytes`."""

    def __init__(self, seg: Segment, sources: dict[str, str], bandwidth: int) -> None:
        self.h = {
            "state": HydrationState.SNAPSHOT, "bytes": 0, "total_bytes": 0, "pct": 0.0,
            "error": None, "sources": sorted(sources), "bandwidth_bytes_per_s": bandwidth,
            "snapshot_lsn": None, "base_lsn": None, "target_lsn": None,
            "pages": 0, "records": 0, "refetched": 0, "started_at": time.time(),
            "seconds": 0.0, "phase_seconds": {},
        }
        seg.hydration = self.h
        self.t0 = time.monotonic()
        self.t_phase = self.t0
        self.snapshot_bytes = 0
        self.log_bytes = 0
        self.log_records = 0
        self.log_records_est = 0

    def add(self, n: int, log_records: int = 0) -> None:
        self.h["bytes"] += n
        if log_records:
            self.log_bytes += n
            self.log_records += log_records
            self.h["records"] = self.log_records
        self.update()

    def update(self) -> None:
        avg = self.log_bytes / self.log_records if self.log_records else AVG_RECORD_GUESS
        remaining = max(0, self.log_records_est - self.log_records) * avg
        total = max(self.h["bytes"], int(self.snapshot_bytes + self.log_bytes + remaining))
        self.h["total_bytes"] = total
        self.h["pct"] = round(min(99.9, 100.0 * self.h["bytes"] / total), 1) if total else 0.0
        self.h["seconds"] = round(time.monotonic() - self.t0, 3)

    def phase(self, name: HydrationState) -> None:
        now = time.monotonic()
        self.h["phase_seconds"][self.h["state"]] = round(now - self.t_phase, 3)
        self.t_phase = now
        self.h["state"] = name
        log.info("hydration_phase", state=name, bytes=self.h["bytes"])

    def finish(self) -> None:
        self.h["total_bytes"] = self.h["bytes"]
        self.h["pct"] = 100.0
        self.h["seconds"] = round(time.monotonic() - self.t0, 3)
        self.phase(HydrationState.DONE)

    def fail(self, error: str) -> None:
        self.h.update(state=HydrationState.FAILED, error=error)
