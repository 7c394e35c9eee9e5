"""One segment's view of its PG's log: the SCL chain, holes, epochs and truncation.

Records of a PG form a chain through `prev_lsn_in_pg`. The SCL is the end of the
unbroken chain from the PG's beginning: every record of the PG at or below it is here.
Records that arrive ahead of a hole wait in `pending` until gossip fills the hole.
The node persists what `accept` returns and the `meta()` snapshot in one atomic write.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from .errors import ImplausibleClaim, NeedsSeal, StaleEpoch, StaleMembership
from .records import EncodedRecord, Record
from .writer_core import MAX_LAL

Range = tuple[int, int]  # (start, end]: LSNs start < lsn <= end are void
AnyRecord = TypeVar("AnyRecord", Record, EncodedRecord)  # decoded, or as received


def in_ranges(lsn: int, ranges: Iterable[Range]) -> bool:
    return any(start < lsn <= end for start, end in ranges)


@dataclass(slots=True)
class SegmentMeta:
    pg: int
    volume_epoch: int = 0
    membership_epoch: int = 0
    scl: int = 0
    # Highest chain LSN forgotten from memory (at or below the VDL hint): truncation
    # never goes below a VDL, so the chain below this point is never needed again.
    floor: int = 0
    vdl_hint: int = 0
    truncations: list[Range] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "pg": self.pg,
            "volume_epoch": self.volume_epoch,
            "membership_epoch": self.membership_epoch,
            "scl": self.scl,
            "floor": self.floor,
            "vdl_hint": self.vdl_hint,
            "truncations": [list(r) for r in self.truncations],
        }

    @classmethod
    def from_json(cls, data: dict) -> SegmentMeta:
        meta = cls(int(data["pg"]))
        for key in ("volume_epoch", "membership_epoch", "scl", "floor", "vdl_hint"):
            setattr(meta, key, int(data.get(key, 0)))
        meta.truncations = [(int(a), int(b)) for a, b in data.get("truncations", [])]
        return meta


@dataclass(slots=True)
class SealResult:
    dropped: list[int]  # LSNs to delete from storage
    scl_before: int
    scl_after: int


@dataclass(slots=True)
class RebaseResult:
    dropped: list[int]  # LSNs to delete from storage (voided by a range, or at/below the base)
    rebased: bool  # the chain now starts at the base (False: the base was not above SCL)


class SegmentLog:
    """Pure bookkeeping of one segment; the caller does the I/O."""

    def __init__(self, meta: SegmentMeta, stored: Iterable[tuple[int, int]] = ()) -> None:
        """`stored`: (lsn, prev_lsn_in_pg) of records above `meta.floor`, any order."""
        self.meta = meta
        self.chain = array("Q")  # chain LSNs above floor, ascending, up to SCL
        self.pending: dict[int, int] = {}  # prev_lsn -> lsn, for records above a hole
        self.above: set[int] = set()  # LSNs held above SCL
        scl = meta.scl
        meta.scl = meta.floor
        for lsn, prev in sorted(stored):
            self._link(lsn, prev)
        if meta.scl < scl:
            raise ValueError(f"pg {meta.pg}: stored records end at {meta.scl} < persisted SCL {scl}")

    # -- epochs -------------------------------------------------------------------
    def check_epochs(self, volume_epoch: int, membership_epoch: int) -> None:
        if volume_epoch < self.meta.volume_epoch:
            raise StaleEpoch(
                f"pg {self.meta.pg}: volume epoch {volume_epoch} < {self.meta.volume_epoch}"
            )
        if volume_epoch > self.meta.volume_epoch:
            raise NeedsSeal(
                f"pg {self.meta.pg}: volume epoch {volume_epoch} > {self.meta.volume_epoch}"
            )
        if membership_epoch < self.meta.membership_epoch:
            raise StaleMembership(
                f"pg {self.meta.pg}: membership epoch {membership_epoch} "
                f"< {self.meta.membership_epoch}"
            )

    def note_membership_epoch(self, membership_epoch: int) -> None:
        """A membership change recorded by the admin path (PUT /v1/segments, a rebuild's
        steps). Never from a write batch: a frame may carry a newer membership epoch
        than the segment knows (it missed the PUT), and is taken, but it raises nothing;
        only an older one is refused (`check_epochs`)."""
        self.meta.membership_epoch = max(self.meta.membership_epoch, membership_epoch)

    # -- claims a write batch makes ----------------------------------------------------------
    def epoch_base(self) -> int:
        """The last LSN below the current epoch's allocations: the newest truncation
        range's end (the writer's first LSN follows it; every writer's recovery seals
        one), 0 if the segment knows none."""
        return max((end for _start, end in self.meta.truncations), default=0)

    def check_write(
        self, volume_epoch: int, membership_epoch: int, writer_vdl: int, records: Iterable[AnyRecord]
    ) -> None:
        """Everything a write batch group must pass before any of it is applied: its
        epochs, then its claims. Raises a ProtocolError; the caller then changes nothing."""
        self.check_epochs(volume_epoch, membership_epoch)
        self.check_claims(writer_vdl, records)

    def check_claims(self, writer_vdl: int, records: Iterable[AnyRecord]) -> None:
        """Refuse what no legitimate writer could send: a VDL inside a truncated range
        (a VDL is a CPL or a recovered VDL, never a void LSN), or a record beyond the
        allocation window, max(writer_vdl, epoch_base) + MAX_LAL (the writer allocates
        no further than LAL beyond max(its VDL, its first LSN - 1), and its VDL when it
        builds a frame is at least what it was when it allocated the frame's records).
        A segment that knows no range yet (created by PUT, not yet sealed or hydrated)
        does not know where the epoch's LSNs start: it checks the VDL only."""
        pg = self.meta.pg
        if in_ranges(writer_vdl, self.meta.truncations):
            raise ImplausibleClaim(f"pg {pg}: VDL {writer_vdl} lies in a truncated range")
        if not self.meta.truncations:
            return
        limit = max(writer_vdl, self.epoch_base()) + MAX_LAL
        for record in records:
            if record.lsn > limit:
                raise ImplausibleClaim(
                    f"pg {pg}: record lsn {record.lsn} beyond the allocation window {limit}"
                )

    # -- intake ---------------------------------------------------------------------
    def has(self, lsn: int) -> bool:
        return lsn in self.above or self._in_chain(lsn)

    def _in_chain(self, lsn: int) -> bool:
        if lsn > self.meta.scl:
            return False
        if lsn <= self.meta.floor:
            return True  # forgotten but known present (or never part of this PG: a duplicate)
        i = bisect_right(self.chain, lsn)
        return i > 0 and self.chain[i - 1] == lsn

    def accept(self, records: Iterable[AnyRecord]) -> list[AnyRecord]:
        """Take records (any order, duplicates allowed); return the new ones to persist."""
        fresh: list[AnyRecord] = []
        for record in records:
            if record.pg != self.meta.pg:
                continue
            if record.lsn <= self.meta.scl or record.lsn in self.above:
                continue  # duplicate (writer resend or gossip)
            if in_ranges(record.lsn, self.meta.truncations):
                continue  # stray from a truncated epoch
            prev = record.prev_lsn_in_pg
            if prev < self.meta.scl or self.pending.get(prev, record.lsn) != record.lsn:
                # Another record already follows `prev`: within one epoch that cannot
                # happen, so one of the two is a stray of an epoch this segment has not
                # been sealed for yet. Keep one record per back-link (else the chain and
                # a rebuild from storage disagree); the seal sorts out which one stays,
                # and gossip or the writer brings the other again if it is needed.
                continue
            fresh.append(record)
            self._link(record.lsn, record.prev_lsn_in_pg)
        return fresh

    def _link(self, lsn: int, prev: int) -> None:
        if prev == self.meta.scl:
            self.meta.scl = lsn
            self.chain.append(lsn)
            while self.meta.scl in self.pending:
                nxt = self.pending.pop(self.meta.scl)
                self.above.discard(nxt)
                self.meta.scl = nxt
                self.chain.append(nxt)
        else:
            self.pending[prev] = lsn
            self.above.add(lsn)

    @property
    def scl(self) -> int:
        return self.meta.scl

    @property
    def max_lsn(self) -> int:
        return max(self.above, default=self.meta.scl)

    def has_holes(self) -> bool:
        return bool(self.above)

    # -- durability hints and forgetting ----------------------------------------------
    def bounded_hint(self, vdl: int) -> int:
        """What of a VDL claim this segment adopts: no more than its own SCL. Beyond its
        SCL a VDL says nothing about its records (materialization and forgetting stop at
        the SCL anyway), so a claim of 2^64-1 becomes the segment's SCL, a real LSN of
        its unbroken chain, and recovery never sees a hint above what the segment holds."""
        return min(vdl, self.meta.scl)

    def note_vdl(self, vdl: int) -> None:
        """The writer says everything up to `vdl` is durable (a claim that passed
        `check_claims`, applied after the frame's records): adopt it up to the SCL
        (`bounded_hint`) and forget chain entries at or below that."""
        hint = self.bounded_hint(vdl)
        if hint <= self.meta.vdl_hint:
            return
        self.meta.vdl_hint = hint
        cut = bisect_right(self.chain, hint)
        if cut > 1024:  # amortize: trim in chunks, keep the floor entry
            self.meta.floor = self.chain[cut - 1]
            del self.chain[:cut]

    # -- seal: new volume epoch with truncation ranges ----------------------------------
    def seal(self, volume_epoch: int, truncations: Iterable[Range]) -> SealResult:
        if volume_epoch < self.meta.volume_epoch:
            raise StaleEpoch(
                f"pg {self.meta.pg}: seal epoch {volume_epoch} < {self.meta.volume_epoch}"
            )
        new_ranges = [r for r in truncations if r not in self.meta.truncations]
        scl_before = self.meta.scl
        # Everything held above the (possibly lower) SCL is relinked below: what waits in
        # pending, and chain entries cut off by a range start. Only LSNs inside a new range
        # are dropped; records above a range's end (a newer writer's, e.g. via gossip) stay.
        for start, _end in new_ranges:
            if self.meta.scl > start and start < self.meta.floor:
                raise ValueError(f"pg {self.meta.pg}: truncation at {start} below floor")
        survivors = [(lsn, prev) for prev, lsn in self.pending.items()]
        for start, _end in sorted(new_ranges):
            if self.meta.scl > start:
                cut = bisect_right(self.chain, start)
                cut_off = list(self.chain[cut:])
                prevs = [self.chain[cut - 1] if cut else self.meta.floor] + cut_off[:-1]
                survivors.extend(zip(cut_off, prevs, strict=True))
                del self.chain[cut:]
                self.meta.scl = self.chain[-1] if self.chain else self.meta.floor
        for new_range in new_ranges:
            self.meta.truncations.append(new_range)
        held = {lsn for lsn, _prev in survivors} | self.above
        drop_set = {lsn for lsn in held if in_ranges(lsn, new_ranges)}
        self.pending.clear()
        self.above.clear()
        for lsn, prev in sorted(survivors):
            if lsn not in drop_set:
                self._link(lsn, prev)
        self.meta.volume_epoch = volume_epoch
        return SealResult(sorted(drop_set), scl_before, self.meta.scl)

    # -- rebase: start the chain from a page snapshot (rebuild, restore install) ------------
    def rebase(self, base: int, truncations: Iterable[Range] = (), vdl_hint: int = 0) -> RebaseResult:
        """Re-base the segment on a page snapshot at `base` (the PG's last record the
        snapshot covers), taken from a source whose truncation ranges are `truncations`
        and whose VDL hint is `vdl_hint`: floor = SCL = base when base > SCL.

        The source's ranges this segment did not know are applied like a seal at its own
        epoch (clipped to the floor): records it holds inside them (the writer's, taken
        before a membership change, or a retried hydration's) are uncommitted by
        definition and go, or the SCL would count them and no later record could link
        (found by the simulator, tests/sim). Records held above the base relink (e.g. the
        writer's, which keep arriving during a rebuild); those at or below it are covered
        by the snapshot and go. Pure: the caller deletes `dropped` and persists the meta.
        """
        meta = self.meta
        dropped: list[int] = []
        new_ranges = [r for r in truncations if r not in meta.truncations]
        clipped = [(max(a, meta.floor), b) for a, b in new_ranges if b > meta.floor]
        if clipped:
            dropped += self.seal(meta.volume_epoch, clipped).dropped
        for r in new_ranges:
            if r not in meta.truncations:
                meta.truncations.append(r)
        if base <= meta.scl:
            meta.vdl_hint = max(meta.vdl_hint, self.bounded_hint(vdl_hint))
            return RebaseResult(dropped, False)
        held: list[tuple[int, int]] = []
        prev = meta.floor
        for lsn in self.chain:
            held.append((lsn, prev))
            prev = lsn
        held.extend((lsn, p) for p, lsn in self.pending.items())
        keep = [(lsn, p) for lsn, p in held if lsn > base and not in_ranges(lsn, meta.truncations)]
        dropped += [lsn for lsn, _p in held if lsn <= base]
        meta.floor = meta.scl = base
        self.chain = array("Q")
        self.pending.clear()
        self.above.clear()
        for lsn, p in sorted(keep):
            self._link(lsn, p)
        meta.vdl_hint = max(meta.vdl_hint, self.bounded_hint(vdl_hint))
        return RebaseResult(dropped, True)
