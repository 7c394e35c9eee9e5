"""plan_recovery: VDL from read-quorum reports, partial mini-transactions, truncations."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidemark_protocol.errors import StaleEpoch
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership
from tidemark_protocol.records import Record, RecordFlags
from tidemark_protocol.recovery import (
    NoReadQuorum,
    RecordInfo,
    SegmentReport,
    plan_recovery,
)
from tidemark_protocol.segment import SegmentLog, SegmentMeta, in_ranges
from tidemark_protocol.writer_core import Change, StartState, WriterCore

pytestmark = pytest.mark.unit

SIX = ("a0", "a1", "b0", "b1", "c0", "c1")
CPL = int(RecordFlags.CPL)


class History:
    """LSNs 1..n in mini-transactions over PGs, with back-links per PG."""

    def __init__(self, mtrs: list[list[int]]) -> None:  # each MTR: list of PGs
        self.info: dict[int, tuple[int, RecordInfo]] = {}
        self.cpls: list[int] = []
        last: dict[int, int] = {}
        lsn = 0
        for pgs in mtrs:
            for i, pg in enumerate(pgs):
                lsn += 1
                flags = CPL if i == len(pgs) - 1 else 0
                self.info[lsn] = (pg, RecordInfo(lsn, last.get(pg, 0), flags))
                last[pg] = lsn
            self.cpls.append(lsn)

    def report(self, name, pg, lsns, epoch=1, hint=0, truncations=(), floor=0) -> SegmentReport:
        records = [self.info[x][1] for x in sorted(lsns) if self.info[x][0] == pg and x > floor]
        scl = floor
        for x in sorted(x for x in self.info if self.info[x][0] == pg and x > floor):
            if x not in lsns:
                break
            scl = x
        return SegmentReport(name, epoch, scl, floor, hint, list(truncations), records)


def members(pgs) -> dict[int, Membership]:
    return {pg: Membership(1, SIX) for pg in pgs}


def test_single_pg_everything_present() -> None:
    h = History([[0], [0, 0], [0]])  # cpls 1, 3, 4
    all_lsns = set(h.info)
    reports = {0: [h.report(n, 0, all_lsns) for n in SIX[:3]]}
    plan = plan_recovery(reports, members([0]), lal=100)
    assert plan.vdl == 4 and plan.vcl == 4
    assert plan.volume_epoch == 2
    assert plan.truncation == (4, 104) and plan.truncations == [(4, 104)]
    assert plan.pg_tails == {0: 4}
    assert plan.start_state().next_lsn == 105 and plan.start_state().vdl == 4
    assert plan.to_rereplicate == {0: {x: list(SIX[:3]) for x in (1, 2, 3, 4)}}


def test_partial_mini_transaction_is_cut() -> None:
    h = History([[0], [0, 1, 0], [1]])  # lsns: 1 | 2 3 4 | 5
    reports = {
        0: [h.report(n, 0, {1, 2}) for n in SIX[:3]],  # 4 missing everywhere
        1: [h.report(n, 1, {3, 5}) for n in SIX[:3]],
    }
    plan = plan_recovery(reports, members([0, 1]), lal=10)
    assert plan.vcl == 3 and plan.vdl == 1
    assert plan.truncation[0] == 1
    assert plan.pg_tails == {0: 1, 1: 0}
    # 5 (a complete MTR of its own) is above the hole: voided too
    assert in_ranges(5, [plan.truncation])


def test_union_of_the_read_quorum_counts() -> None:
    h = History([[0], [0], [0], [0]])
    reports = {0: [h.report("a0", 0, {1, 2}), h.report("b0", 0, {1, 3}), h.report("c0", 0, {4})]}
    plan = plan_recovery(reports, members([0]), lal=10)
    assert plan.vdl == 4
    assert plan.to_rereplicate[0] == {1: ["a0", "b0"], 2: ["a0"], 3: ["b0"], 4: ["c0"]}


def test_no_read_quorum() -> None:
    h = History([[0]])
    with pytest.raises(NoReadQuorum):
        plan_recovery({0: [h.report(n, 0, {1}) for n in SIX[:2]]}, members([0]), lal=10)
    with pytest.raises(NoReadQuorum):  # a PG with no answers at all
        plan_recovery({0: [h.report(n, 0, {1}) for n in SIX[:3]]}, members([0, 1]), lal=10)
    with pytest.raises(NoReadQuorum):  # answers from strangers do not count
        plan_recovery({0: [h.report(n, 0, {1}) for n in ("x", "y", "z")]}, members([0]), lal=10)


def test_dual_membership_read_quorum_of_either_set() -> None:
    h = History([[0]])
    m = {0: Membership(1, SIX).begin_replace("c1", "g")}
    plan = plan_recovery({0: [h.report(n, 0, {1}) for n in ("a0", "c1", "b0")]}, m, lal=10)
    assert plan.vdl == 1
    with pytest.raises(NoReadQuorum):
        plan_recovery({0: [h.report(n, 0, {1}) for n in ("a0", "c1", "g")]}, m, lal=10)


def test_epochs_and_min_epoch() -> None:
    h = History([[0]])
    reports = {0: [h.report(n, 0, {1}, epoch=e) for n, e in zip(SIX[:3], (3, 5, 4), strict=True)]}
    assert plan_recovery(reports, members([0]), lal=10).volume_epoch == 6
    assert plan_recovery(reports, members([0]), lal=10, min_epoch=9).volume_epoch == 10


def test_previous_truncation_ranges_are_skipped() -> None:
    # epoch 1 wrote 1..6; recovery kept 1..3 and voided (3, 13]; epoch 2 wrote 14, 15.
    h = History([[0], [0], [0], [0], [0], [0]])
    lsns_e1 = {1, 2, 3, 4, 5}  # 4, 5: strays still on an unsealed segment
    t1 = (3, 13)
    e2 = {14: RecordInfo(14, 3, CPL), 15: RecordInfo(15, 14, 0), 16: RecordInfo(16, 15, CPL)}
    sealed = h.report("a0", 0, {1, 2, 3}, epoch=2, hint=3, truncations=[t1])
    sealed.records += [e2[14], e2[15], e2[16]]
    stale = h.report("b0", 0, lsns_e1, epoch=1, hint=2)
    other = h.report("c0", 0, {1, 2, 3}, epoch=2, hint=3, truncations=[t1])
    other.records += [e2[14]]
    plan = plan_recovery({0: [sealed, stale, other]}, members([0]), lal=5)
    assert plan.vdl == 16 and plan.vcl == 16
    assert plan.volume_epoch == 3
    assert plan.truncations == [t1, (16, 21)]
    assert plan.pg_tails == {0: 16}
    assert set(plan.to_rereplicate[0]) == {14, 15, 16}  # above the hint (3), below VDL
    assert plan.to_rereplicate[0][14] == ["a0", "c0"]


def test_walk_stops_inside_a_new_epoch_and_range_ends_grow() -> None:
    t1 = (3, 13)
    e2 = [RecordInfo(14, 3, CPL), RecordInfo(16, 14, CPL)]  # 15 (another PG) lost
    base = [RecordInfo(x, x - 1, CPL) for x in (1, 2, 3)]
    rs = [SegmentReport(n, 2, 14, 0, 3, [t1], base + e2) for n in SIX[:3]]
    plan = plan_recovery({0: rs}, members([0]), lal=5)
    assert plan.vdl == 14
    # the new range covers what the epoch-2 writer could have allocated: its LAL counted
    # from where its epoch began (13) as well as from the VDL, and everything seen
    assert plan.truncation == (14, 19)
    assert in_ranges(16, [plan.truncation])


def test_floor_and_hint_give_the_pg_tail() -> None:
    # a segment forgot its chain up to 50 (floor); records 51, 52 above
    rs = [
        SegmentReport(n, 1, 52, 50, 50, [], [RecordInfo(51, 50, 0), RecordInfo(52, 51, CPL)])
        for n in SIX[:3]
    ]
    quiet = [SegmentReport(n, 1, 40, 40, 50, [], []) for n in SIX[:3]]
    plan = plan_recovery({0: rs, 1: quiet}, members([0, 1]), lal=10)
    assert plan.vdl == 52 and plan.pg_tails == {0: 52, 1: 40}


@st.composite
def scenarios(draw):
    pg_count = draw(st.integers(1, 3))
    mtrs = draw(
        st.lists(
            st.lists(st.integers(0, pg_count - 1), min_size=1, max_size=4), min_size=1, max_size=12
        )
    )
    h = History(mtrs)
    n = len(h.info)
    acked_idx = draw(st.integers(-1, len(h.cpls) - 1))
    acked = h.cpls[acked_idx] if acked_idx >= 0 else 0
    holders: dict[int, set[str]] = {}
    for lsn in range(1, n + 1):
        if lsn <= acked:  # in a write quorum: at least 4 of 6
            holders[lsn] = set(
                draw(st.lists(st.sampled_from(SIX), min_size=4, max_size=6, unique=True))
            )
        else:
            holders[lsn] = set(draw(st.lists(st.sampled_from(SIX), max_size=6, unique=True)))
    read = {
        pg: draw(st.lists(st.sampled_from(SIX), min_size=3, max_size=6, unique=True))
        for pg in range(pg_count)
    }
    return pg_count, h, acked, holders, read


@settings(max_examples=300)
@given(scenarios(), st.integers(1, 50))
def test_acked_commits_survive_and_no_partial_mtr(scenario, lal) -> None:
    pg_count, h, acked, holders, read = scenario
    reports = {
        pg: [h.report(name, pg, {x for x, hs in holders.items() if name in hs}) for name in names]
        for pg, names in read.items()
    }
    plan = plan_recovery(reports, members(range(pg_count)), lal=lal)
    assert plan.vdl >= acked
    assert plan.vdl == 0 or plan.vdl in h.cpls  # never inside a mini-transaction
    # every LSN up to the VDL was found in the read quorum
    for lsn in range(1, plan.vdl + 1):
        pg = h.info[lsn][0]
        assert holders[lsn] & set(read[pg])
        assert set(plan.to_rereplicate[pg][lsn]) == holders[lsn] & set(read[pg])
    start, end = plan.truncation
    seen = [x for x, hs in holders.items() if hs & set(read[h.info[x][0]])]
    assert start == plan.vdl and end >= plan.vdl + lal and end >= max(seen, default=0)
    for pg in range(pg_count):
        tail = max((x for x in range(1, plan.vdl + 1) if h.info[x][0] == pg), default=0)
        assert plan.pg_tails[pg] == tail


def _fleet():
    return {n: SegmentLog(SegmentMeta(0, volume_epoch=1)) for n in SIX}


def _report(name, log) -> SegmentReport:
    # each test record is its own mini-transaction, so every one is a CPL
    infos = [RecordInfo(lsn, lsn - 1, CPL) for lsn in sorted(set(log.chain) | log.above)]
    m = log.meta
    return SegmentReport(
        name, m.volume_epoch, m.scl, m.floor, m.vdl_hint, list(m.truncations), infos
    )


@pytest.mark.parametrize("fence_first", [False, True])
def test_reporting_segments_must_be_fenced_before_they_report(fence_first) -> None:
    """Why recovery fences its read quorum: a segment that reported but was left out of
    the sealed write quorum can still take the old writer's record afterwards, and the
    old writer can add that ack to acks from before the seal (from segments outside the
    read quorum) and acknowledge a commit the plan truncated."""
    segs = _fleet()
    old = WriterCore(VolumeLayout(1, 4, 64), members([0]), StartState(1, 0, 1, {}))
    (rec,) = old.allocate([Change(0, b"\0\0\0\0x")])
    assert isinstance(rec, Record) and rec.lsn == 1
    early_acks = []
    for n in ("a0", "b1"):  # outside the read quorum below
        segs[n].accept([rec])
        early_acks.append((n, segs[n].scl))  # acks still in flight to the old writer
    read, sealed = ("a1", "c1", "b0"), ("a0", "b0", "b1", "c0")
    if fence_first:
        for n in read:
            segs[n].seal(2, [])
    plan = plan_recovery(
        {0: [_report(n, segs[n]) for n in read]}, members([0]), lal=10, min_epoch=1
    )
    assert plan.vdl == 0  # lsn 1 was seen nowhere in the read quorum
    for n in sealed:
        segs[n].seal(plan.volume_epoch, plan.truncations)
    # the old writer keeps going: sends lsn 1 to the segments not in the sealed set
    for n in ("a1", "c1"):
        try:
            segs[n].check_epochs(1, 1)
        except StaleEpoch:
            continue
        segs[n].accept([rec])
        early_acks.append((n, segs[n].scl))
    for n, scl in early_acks:
        old.on_ack(0, n, scl)
    if fence_first:
        assert old.vdl == 0  # fenced: nothing acknowledged
    else:
        # the hazard: a commit acknowledged by the old writer that recovery truncated
        assert old.vdl == 1 and in_ranges(1, [plan.truncation])
