"""The writer's sans-IO core: LSN allocation, watermarks and commit completion.

LSNs are dense: the writer hands out consecutive integers. That makes a missing LSN
visible to a recovering writer (see recovery.py) and lets VCL advance with a simple
in-order sweep: VCL is the end of the longest prefix of allocated LSNs each of which
its PG's write quorum holds (PGCL ≥ lsn); VDL is the last CPL within it.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import BackPressure
from .layout import VolumeLayout
from .quorum import Membership, QuorumTracker
from .records import Record, RecordFlags

DEFAULT_LAL = 10_000_000
# The largest LAL a writer may use: storage nodes refuse records more than MAX_LAL beyond
# max(the frame's VDL, the epoch's first LSN - 1) (SegmentLog.check_claims), and recovery
# voids stray records no further than that (plan_recovery).
MAX_LAL = DEFAULT_LAL


@dataclass(frozen=True, slots=True)
class Change:
    """One page change of a mini-transaction, before it has an LSN."""

    page: int
    payload: bytes
    full_image: bool = False


@dataclass(frozen=True, slots=True)
class StartState:
    """Where a writer starts: from recovery (or an empty volume)."""

    volume_epoch: int
    vdl: int
    next_lsn: int
    pg_tails: dict[int, int]  # per PG: last LSN at or below vdl


class WriterCore:
    def __init__(
        self,
        layout: VolumeLayout,
        memberships: dict[int, Membership],
        start: StartState,
        lal: int = DEFAULT_LAL,
    ) -> None:
        if not 0 < lal <= MAX_LAL:
            raise ValueError(f"lal {lal} outside 1..{MAX_LAL}")
        self.layout = layout
        self.volume_epoch = start.volume_epoch
        self.lal = lal
        self.trackers = {pg: QuorumTracker(m) for pg, m in memberships.items()}
        self._pgcl = dict.fromkeys(memberships, 0)
        self.next_lsn = start.next_lsn
        # LSNs of this epoch start above the truncation range, not above VDL: LAL bounds
        # what is allocated beyond max(VDL, the epoch's first LSN - 1).
        self._lal_base = start.next_lsn - 1
        self.vcl = start.vdl
        self.vdl = start.vdl
        self._unresolved: deque[tuple[int, int, bool]] = deque()  # (lsn, pg, is_cpl)
        self._pg_last = dict(start.pg_tails)  # last allocated LSN per PG (next prev link)
        self._page_last: dict[int, int] = {}
        # Per PG, LSNs allocated above the read floor: a read at point R needs a segment
        # whose SCL reaches the PG's last LSN ≤ R.
        self._pg_lsns = {pg: array("Q", [start.pg_tails.get(pg, 0)]) for pg in memberships}
        # Records not yet in their PG's write quorum, for resending to a reconnected node.
        self.unstable: dict[int, deque[Record]] = {pg: deque() for pg in memberships}

    # -- allocation -----------------------------------------------------------------
    def allocate(self, changes: Iterable[Change]) -> list[Record]:
        """Give a mini-transaction its LSNs; the last record is its CPL."""
        changes = list(changes)
        if not changes:
            raise ValueError("a mini-transaction needs at least one change")
        if not self.can_allocate(len(changes)):
            raise BackPressure(f"next LSN would pass the allocation limit {self.lsn_limit}")
        records = []
        for i, change in enumerate(changes):
            lsn = self.next_lsn
            self.next_lsn += 1
            pg = self.layout.pg_of(change.page)
            flags = RecordFlags.FULL_IMAGE if change.full_image else RecordFlags.NONE
            is_cpl = i == len(changes) - 1
            if is_cpl:
                flags |= RecordFlags.CPL
            record = Record(
                lsn,
                pg,
                change.page,
                self._pg_last.get(pg, 0),
                self._page_last.get(change.page, 0),
                flags,
                change.payload,
            )
            self._pg_last[pg] = lsn
            self._page_last[change.page] = lsn
            self._pg_lsns[pg].append(lsn)
            self._unresolved.append((lsn, pg, is_cpl))
            self.unstable[pg].append(record)
            records.append(record)
        return records

    @property
    def lsn_limit(self) -> int:
        """The highest LSN the writer may allocate now (VDL + LAL, per epoch)."""
        return max(self.vdl, self._lal_base) + self.lal

    def can_allocate(self, count: int = 1) -> bool:
        return self.next_lsn + count - 1 <= self.lsn_limit

    # -- acknowledgements -------------------------------------------------------------
    def on_ack(self, pg: int, segment: str, scl: int) -> bool:
        """Record a segment's SCL; returns True if VDL moved. An SCL at or above the next
        LSN claims records this writer never allocated (a chain a hostile frame extended,
        or another writer's): it is not counted towards any quorum."""
        if scl >= self.next_lsn:
            return False
        tracker = self.trackers[pg]
        tracker.observe(segment, scl)
        pgcl = tracker.pgcl()
        if pgcl <= self._pgcl[pg]:
            return False
        self._pgcl[pg] = pgcl
        self._release(pg)
        return self._advance()

    def _release(self, pg: int) -> None:
        """Drop records now in their PG's write quorum from the re-send queue."""
        pgcl = self._pgcl[pg]
        unstable = self.unstable[pg]
        while unstable and unstable[0].lsn <= pgcl:
            unstable.popleft()

    def _advance(self) -> bool:
        moved = False
        pgcl = self._pgcl
        unresolved = self._unresolved
        while unresolved and pgcl[unresolved[0][1]] >= unresolved[0][0]:
            lsn, _pg, is_cpl = unresolved.popleft()
            self.vcl = lsn
            if is_cpl:
                self.vdl = lsn
                moved = True
        return moved

    def pgcl(self, pg: int) -> int:
        return self._pgcl[pg]

    def scl(self, pg: int, segment: str) -> int:
        return self.trackers[pg].scl.get(segment, 0)

    def set_membership(self, pg: int, membership: Membership) -> None:
        self.trackers[pg].membership = membership
        self._pgcl[pg] = max(self._pgcl[pg], self.trackers[pg].pgcl())
        self._release(pg)
        self._advance()

    # -- reads ------------------------------------------------------------------------
    def read_tail(self, pg: int, read_point: int) -> int:
        """The PG's last LSN at or below `read_point`: what a segment must hold to serve it."""
        lsns = self._pg_lsns[pg]
        i = bisect_right(lsns, read_point)
        if i == 0:
            raise ValueError(f"read point {read_point} is below pg {pg}'s read floor")
        return lsns[i - 1]

    def read_candidates(self, pg: int, read_point: int) -> list[str]:
        return self.trackers[pg].complete_segments(self.read_tail(pg, read_point))

    def read_history_size(self) -> int:
        """How many LSNs the read-tail history holds (bounded by forget_below)."""
        return sum(len(lsns) for lsns in self._pg_lsns.values())

    def forget_below(self, read_floor: int) -> None:
        """No read will use a point below `read_floor` (PGMRPL): drop read-tail history.
        Amortized: history is cut only once more than 1024 LSNs of a PG lie below it."""
        for lsns in self._pg_lsns.values():
            cut = bisect_right(lsns, read_floor) - 1
            if cut > 1024:
                del lsns[:cut]
