"""Crash recovery of a writer, as a pure plan computed from read-quorum answers.

Every acknowledged commit C had all LSNs ≤ C in a write quorum of their PG; any read
quorum meets that write quorum, so the union of what a read quorum of every PG holds
contains every LSN ≤ C. LSNs are dense, so VCL is the end of the unbroken run of LSNs
found above the highest VDL any segment was told (the hint), skipping truncated ranges;
VDL is the last CPL in that run. Everything above VDL is voided by a new truncation
range, recorded with the new volume epoch in a write quorum of every PG before the
writer allocates LSNs above it. No redo is replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ProtocolError
from .quorum import Membership, has_read_quorum
from .records import RecordFlags
from .segment import Range, in_ranges
from .writer_core import StartState


class NoReadQuorum(ProtocolError):
    code = "no_read_quorum"


@dataclass(frozen=True, slots=True)
class RecordInfo:
    lsn: int
    prev_lsn_in_pg: int
    flags: int


@dataclass(slots=True)
class SegmentReport:
    """What one segment tells a recovering writer about its PG."""

    segment: str
    volume_epoch: int
    scl: int
    floor: int
    vdl_hint: int
    truncations: list[Range]
    records: list[RecordInfo]  # every record it stores above `floor`


@dataclass(slots=True)
class RecoveryPlan:
    volume_epoch: int
    vdl: int
    vcl: int
    truncation: Range
    truncations: list[Range]  # all known ranges, including the new one
    pg_tails: dict[int, int]
    # Per PG, LSNs in (hint, vdl] with the segments holding them: to be copied to a
    # write quorum before the writer opens, since one copy may be all there is.
    to_rereplicate: dict[int, dict[int, list[str]]] = field(default_factory=dict)

    def start_state(self) -> StartState:
        return StartState(self.volume_epoch, self.vdl, self.truncation[1] + 1, self.pg_tails)


def plan_recovery(
    reports: Mapping[int, Sequence[SegmentReport]],
    memberships: Mapping[int, Membership],
    lal: int,
    min_epoch: int = 0,
) -> RecoveryPlan:
    for pg, membership in memberships.items():
        answered = [r.segment for r in reports.get(pg, ())]
        if not has_read_quorum(membership, answered):
            raise NoReadQuorum(f"pg {pg}: only {sorted(answered)} answered; need a read quorum")
    all_reports = [r for rs in reports.values() for r in rs]
    base = max((r.vdl_hint for r in all_reports), default=0)
    truncations = sorted({tuple(t) for r in all_reports for t in r.truncations})
    epoch = max([min_epoch] + [r.volume_epoch for r in all_reports]) + 1

    seen: dict[int, tuple[int, RecordInfo]] = {}  # lsn -> (pg, info)
    holders: dict[int, list[str]] = {}
    max_seen = base
    for pg, rs in reports.items():
        for report in rs:
            for info in report.records:
                if info.lsn <= base or in_ranges(info.lsn, truncations):
                    continue
                seen.setdefault(info.lsn, (pg, info))
                holders.setdefault(info.lsn, []).append(report.segment)
                max_seen = max(max_seen, info.lsn)

    vcl = vdl = base
    lsn = base + 1
    while True:
        if lsn in seen:
            vcl = lsn
            if seen[lsn][1].flags & RecordFlags.CPL:
                vdl = lsn
            lsn += 1
            continue
        void = next((end for start, end in truncations if start < lsn <= end), None)
        if void is None:
            break
        vcl = lsn = void
        lsn += 1

    pg_tails: dict[int, int] = {}
    rereplicate: dict[int, dict[int, list[str]]] = {}
    for pg, rs in reports.items():
        tail = max((r.floor for r in rs), default=0)
        for lsn_, (rpg, _info) in seen.items():
            if rpg == pg and lsn_ <= vdl:
                tail = max(tail, lsn_)
                rereplicate.setdefault(pg, {})[lsn_] = holders[lsn_]
        # Records at or below the hint are durable; the tail may be among them.
        for report in rs:
            for info in report.records:
                if info.lsn <= min(base, vdl) and not in_ranges(info.lsn, truncations):
                    tail = max(tail, info.lsn)
        pg_tails[pg] = tail

    # A writer of an earlier epoch allocated at most LAL beyond max(its VDL, its first
    # LSN - 1), and its first LSN followed the newest truncation range then known.
    last_end = max((e for _s, e in truncations), default=0)
    end = max(vdl, last_end) + lal
    end = max(end, max_seen)
    new_range = (vdl, end)
    return RecoveryPlan(
        volume_epoch=epoch,
        vdl=vdl,
        vcl=vcl,
        truncation=new_range,
        truncations=[*truncations, new_range],
        pg_tails=pg_tails,
        to_rereplicate=rereplicate,
    )
