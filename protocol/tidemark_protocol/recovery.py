"""Crash recovery of a writer, as a pure plan computed from read-quorum answers.

Every acknowledged commit C had all LSNs ≤ C in a write quorum of their PG; any read
quorum meets that write quorum, so the union of what a read quorum of every PG holds
contains every LSN ≤ C. LSNs are dense, so VCL is the end of the unbroken run of LSNs
found above the highest VDL hint two nodes attest (`attested_hint`: one segment's hint
never outvotes the others), skipping truncated ranges; VDL is the last CPL in that run.
Everything above VDL is voided by a new truncation range, recorded with the new volume
epoch in a write quorum of every PG before the writer allocates LSNs above it. No redo
is replayed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .errors import ProtocolError
from .quorum import Membership, has_read_quorum
from .records import RecordFlags
from .segment import Range, in_ranges
from .writer_core import MAX_LAL, StartState


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
    truncations = sorted({tuple(t) for r in all_reports for t in r.truncations})
    epoch = max([min_epoch] + [r.volume_epoch for r in all_reports]) + 1
    seen, holders = _collect(reports, truncations)
    base, vcl, vdl = _scan_from_attested(all_reports, seen, truncations)

    pg_tails: dict[int, int] = {}
    rereplicate: dict[int, dict[int, list[str]]] = {}
    for pg, rs in reports.items():
        tail = max((r.floor for r in rs), default=0)
        for lsn_, (rpg, _info) in seen.items():
            if rpg == pg and lsn_ <= vdl:
                tail = max(tail, lsn_)
                if lsn_ > base:
                    rereplicate.setdefault(pg, {})[lsn_] = holders[lsn_]
        pg_tails[pg] = tail

    # A writer of an earlier epoch allocated at most LAL beyond max(its VDL, its first
    # LSN - 1), and its first LSN followed the newest truncation range then known. Stray
    # records up to MAX_LAL beyond that are voided too (a writer with a larger LAL); one
    # further out no writer made (nodes refuse them), and voiding up to it could use up
    # the LSN space: it is left out.
    last_end = max((e for _s, e in truncations), default=0)
    window = max(vdl, last_end) + MAX_LAL
    strays = [lsn for lsn in seen if base < lsn <= window]
    end = max([max(vdl, last_end) + lal, *strays])
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


Seen = dict[int, tuple[int, RecordInfo]]  # lsn -> (pg, info)


def _collect(
    reports: Mapping[int, Sequence[SegmentReport]], truncations: Sequence[Range]
) -> tuple[Seen, dict[int, list[str]]]:
    """Every reported record outside the truncated ranges, and who holds each."""
    seen: Seen = {}
    holders: dict[int, list[str]] = {}
    for pg, rs in reports.items():
        for report in rs:
            for info in report.records:
                if in_ranges(info.lsn, truncations):
                    continue
                seen.setdefault(info.lsn, (pg, info))
                holders.setdefault(info.lsn, []).append(report.segment)
    return seen, holders


def attested_hint(reports: Sequence[SegmentReport]) -> int:
    """The highest VDL hint that segments on two different nodes vouch for: one shows it
    as its hint and another shows an LSN at least as high (its hint, SCL, floor or a
    record it holds). A hint only its own node backs (one corrupted or lied-to segment,
    say 2^64-1) cannot outvote the others. An honest hint is a VDL the writer sent to
    all its nodes (or a segment's own SCL below it), durable in a write quorum, so other
    nodes normally show it; when none does, `_scan_from_attested` still scans from
    every floor the run does not reach, so nothing that segment forgot is missed."""
    shown: dict[str, int] = {}
    for r in reports:
        highest = max([r.vdl_hint, r.scl, r.floor, *(i.lsn for i in r.records)])
        shown[r.segment] = max(shown.get(r.segment, 0), highest)
    for hint in sorted({r.vdl_hint for r in reports}, reverse=True):
        if sum(1 for lsn in shown.values() if lsn >= hint) >= 2:
            return hint
    return 0


def _scan_from_attested(
    reports: Sequence[SegmentReport], seen: Seen, truncations: Sequence[Range]
) -> tuple[int, int, int]:
    """(base, VCL, VDL): the run of LSNs from the attested hint. A segment forgets its
    chain only at or below its own floor (≤ its hint), so when the run stops short of
    a floor above the base, that segment may hold what is missing: scan again from that
    floor (the records below it are durable by that segment's word, and it still holds
    the unbroken chain up to it)."""
    base = attested_hint(reports)
    while True:
        vcl, vdl = _run(seen, truncations, base)
        floors = [r.floor for r in reports if r.floor > vcl]
        if not floors:
            return base, vcl, vdl
        base = max(floors)


def _run(seen: Seen, truncations: Sequence[Range], base: int) -> tuple[int, int]:
    """VCL: the end of the unbroken run of LSNs above `base` (skipping truncated
    ranges); VDL: the last CPL in it (or `base`)."""
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
            return vcl, vdl
        vcl = lsn = void
        lsn += 1
