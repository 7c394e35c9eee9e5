"""The scrubber's node-wide state and counters (one per node, on NodeState): what the
scrub passes (scrub.py) found and fixed, and the wake-up a read that meets a corrupt
copy uses to ask for an early pass."""

from __future__ import annotations

import asyncio

import structlog

from .segments import Segment
from .telemetry import Telemetry

log = structlog.get_logger("tidemark.node.scrub")


class Scrubber:
    def __init__(self, telemetry: Telemetry) -> None:
        meter = telemetry.meter_provider.get_meter("tidemark.node.scrub")
        self.m_detected = meter.create_counter(
            "tidemark_corruptions_detected", description="corrupt stored records/page versions found")
        self.m_repaired = meter.create_counter(
            "tidemark_corruptions_repaired", description="corrupt stored copies repaired")
        self.detected = 0
        self.repaired = 0
        self.passes = 0
        self.last_pass_at: float | None = None
        self.known: set[tuple[int, str, int, int]] = set()  # (pg, kind, page, lsn) still bad
        self.wake = asyncio.Event()

    def status(self) -> dict:
        return {"corruptions_detected": self.detected, "corruptions_repaired": self.repaired,
                "scrub_passes": self.passes, "scrub_unrepaired": len(self.known),
                "last_scrub_at": self.last_pass_at}

    def request(self) -> None:
        """A read met a corrupt copy: scrub soon rather than at the next interval."""
        self.wake.set()

    def note(self, seg: Segment, kind: str, page: int, lsn: int) -> None:
        key = (seg.pg, kind, page, lsn)
        if key in self.known:
            return
        self.known.add(key)
        self.detected += 1
        seg.corruptions_detected += 1
        self.m_detected.add(1, {"kind": kind})
        log.error("corruption_detected", pg=seg.pg, kind=kind, page=page, lsn=lsn)

    def fixed(self, seg: Segment, kind: str, page: int, lsn: int, how: str) -> None:
        self.known.discard((seg.pg, kind, page, lsn))
        self.repaired += 1
        seg.corruptions_repaired += 1
        self.m_repaired.add(1, {"kind": kind})
        log.info("corruption_repaired", pg=seg.pg, kind=kind, page=page, lsn=lsn, how=how)
