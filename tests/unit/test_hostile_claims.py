"""Claims no legitimate writer could make are refused, and recovery does not let one
segment's hint outvote the read quorum (issue #14: one hostile client bricked a volume
through one node)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_recovery import SIX, History, members

from tidemark_protocol.errors import ImplausibleClaim, StaleMembership
from tidemark_protocol.frames import Frame, FrameGroup, check_claims
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership
from tidemark_protocol.records import Record, RecordFlags
from tidemark_protocol.recovery import RecordInfo, SegmentReport, attested_hint, plan_recovery
from tidemark_protocol.segment import SegmentLog, SegmentMeta
from tidemark_protocol.writer_core import MAX_LAL, Change, StartState, WriterCore

pytestmark = pytest.mark.unit

PG = 2
U64 = (1 << 64) - 1


def chain(lsns: list[int], prev: int = 0) -> list[Record]:
    out = []
    for lsn in lsns:
        out.append(Record(lsn, PG, lsn % 5, prev, 0, RecordFlags.CPL, b""))
        prev = lsn
    return out


def segment(lsns: list[int] = (), truncations=(), membership_epoch: int = 3) -> SegmentLog:
    meta = SegmentMeta(PG, volume_epoch=2, membership_epoch=membership_epoch,
                       truncations=list(truncations))
    log = SegmentLog(meta)
    log.accept(chain(list(lsns)))
    return log


def snapshot(log: SegmentLog) -> tuple:
    return (list(log.chain), dict(log.pending), set(log.above), copy.deepcopy(log.meta.to_json()))


def apply_group(log: SegmentLog, volume_epoch: int, membership_epoch: int, vdl: int,
                records: list[Record]) -> list[Record]:
    """What node intake does with one group of a frame (apply_frame): check, accept, hint."""
    log.check_write(volume_epoch, membership_epoch, vdl, records)
    fresh = log.accept(records)
    log.note_vdl(vdl)
    return fresh


# -- the segment's own rules ---------------------------------------------------------------------
def test_a_vdl_claim_is_adopted_only_up_to_the_scl_and_never_trims_beyond_it() -> None:
    log = segment(range(1, 3001))
    apply_group(log, 2, 3, U64, [])
    assert log.meta.vdl_hint == 3000 and log.meta.floor <= log.scl == 3000
    apply_group(log, 2, 3, 1500, [])  # a lower claim changes nothing
    assert log.meta.vdl_hint == 3000


def test_a_frame_never_raises_the_membership_epoch() -> None:
    log = segment([1, 2])
    apply_group(log, 2, 4, 2, chain([3], prev=2))  # newer than the segment knows: taken
    assert log.meta.membership_epoch == 3 and log.scl == 3
    with pytest.raises(StaleMembership):
        log.check_write(2, 2, 3, [])
    log.note_membership_epoch(4)  # the admin path (PUT /v1/segments) does
    assert log.meta.membership_epoch == 4


def test_a_vdl_inside_a_truncated_range_is_refused_and_changes_nothing() -> None:
    log = segment([1, 2], truncations=[(2, 100)])
    before = snapshot(log)
    with pytest.raises(ImplausibleClaim, match="truncated range"):
        log.check_write(2, 3, 50, chain([101], prev=2))
    assert snapshot(log) == before


def test_a_record_beyond_the_allocation_window_is_refused() -> None:
    log = segment([1, 2], truncations=[(2, 100)])
    before = snapshot(log)
    limit = 100 + MAX_LAL  # max(VDL 2, epoch base 100) + MAX_LAL
    log.check_write(2, 3, 2, chain([limit], prev=2))  # at the window's edge: fine
    for lsn in (limit + 1, U64):
        with pytest.raises(ImplausibleClaim, match="allocation window"):
            log.check_write(2, 3, 2, chain([lsn], prev=2))
    assert snapshot(log) == before


def test_frame_wide_claims() -> None:
    check_claims(Frame(1, 2, 10, 10, [], [(9, 0), (10, 0)]))
    with pytest.raises(ImplausibleClaim, match="pgmrpl"):
        check_claims(Frame(1, 2, 10, 11, []))
    with pytest.raises(ImplausibleClaim, match="mark"):
        check_claims(Frame(1, 2, 10, 0, [FrameGroup(PG, 3, [])], [(U64, 0)]))


def test_writer_lal_is_bounded_by_what_nodes_allow() -> None:
    layout = VolumeLayout(1, 4, 64)
    with pytest.raises(ValueError, match="lal"):
        WriterCore(layout, members([0]), StartState(1, 0, 1, {}), lal=MAX_LAL + 1)


@settings(max_examples=300)
@given(
    st.integers(1, 400),
    st.lists(st.tuples(st.integers(0, U64), st.integers(0, 6), st.lists(st.integers(1, U64), max_size=3)),
             max_size=20),
)
def test_any_claims_leave_the_hint_within_the_chain_and_epochs_alone(n, frames) -> None:
    """Whatever VDLs, membership epochs and record LSNs frames claim: a refused group
    changes nothing; the hint never passes the SCL, the floor never passes the hint, and
    neither epoch moves."""
    log = segment(range(1, n + 1))
    for vdl, mepoch, lsns in frames:
        records = [Record(x, PG, 0, log.scl, 0, RecordFlags.CPL, b"") for x in lsns if x > log.scl]
        before = snapshot(log)
        try:
            apply_group(log, 2, mepoch, vdl, records)
        except (ImplausibleClaim, StaleMembership):
            assert snapshot(log) == before
        assert log.meta.floor <= log.meta.vdl_hint <= log.scl
        assert log.meta.membership_epoch == 3 and log.meta.volume_epoch == 2


# -- recovery: one segment's hint does not outvote the read quorum ---------------------------------
def _honest(h: History, pgs: int, read: tuple[str, ...], hint: int) -> dict[int, list[SegmentReport]]:
    return {pg: [h.report(n, pg, set(h.info), hint=hint) for n in read] for pg in range(pgs)}


@pytest.mark.parametrize("claim", [U64, U64 - 1, 1 << 40, 10 ** 9])
def test_one_segment_claiming_a_huge_hint_does_not_move_recovery(claim) -> None:
    h = History([[0], [0, 1], [1], [0, 1, 0]])  # cpls 1, 3, 4, 7
    reports = _honest(h, 2, SIX[:4], hint=3)
    honest = plan_recovery(reports, members([0, 1]), lal=100)
    reports[0][1].vdl_hint = claim  # one corrupted segment of one PG
    plan = plan_recovery(reports, members([0, 1]), lal=100)
    assert (plan.vdl, plan.vcl, plan.truncation, plan.pg_tails) == (
        honest.vdl, honest.vcl, honest.truncation, honest.pg_tails)
    assert plan.vdl == 7 and plan.start_state().next_lsn < (1 << 63)


def test_one_node_claiming_a_huge_hint_for_every_pg_is_outvoted() -> None:
    h = History([[0], [1], [0, 1]])
    reports = _honest(h, 2, SIX[:3], hint=1)
    for pg in (0, 1):
        reports[pg][0].vdl_hint = U64  # the same node lies for both PGs: still one node
    assert attested_hint([r for rs in reports.values() for r in rs]) == 1
    assert plan_recovery(reports, members([0, 1]), lal=10).vdl == 4


def test_a_stray_record_far_beyond_any_window_does_not_use_up_the_lsn_space() -> None:
    h = History([[0], [0]])
    reports = _honest(h, 1, SIX[:3], hint=1)
    reports[0][2].records.append(RecordInfo(U64, 2, int(RecordFlags.CPL)))
    plan = plan_recovery(reports, members([0]), lal=10)
    assert plan.vdl == 2 and plan.truncation == (2, 12)


def test_a_forgotten_chain_above_the_attested_hint_is_still_scanned() -> None:
    """An honest segment far ahead of the others (its hint unattested) that forgot the
    chain below its floor: the scan starts again from that floor, no commit is lost."""
    h = History([[0]] * 10)
    ahead = h.report("a0", 0, set(range(7, 11)), hint=8, floor=6)  # forgot 1..6
    behind = [h.report(n, 0, {1, 2}, hint=1) for n in ("b0", "c0")]
    plan = plan_recovery({0: [ahead, *behind]}, members([0]), lal=10)
    assert plan.vdl == 10


@st.composite
def corrupted(draw):
    pg_count = draw(st.integers(1, 3))
    mtrs = draw(st.lists(st.lists(st.integers(0, pg_count - 1), min_size=1, max_size=3),
                         min_size=1, max_size=10))
    h = History(mtrs)
    acked = h.cpls[draw(st.integers(0, len(h.cpls) - 1))]
    hint = draw(st.sampled_from([0] + [c for c in h.cpls if c <= acked]))
    bad = draw(st.sampled_from(SIX))
    claim = draw(st.one_of(st.integers(0, U64), st.just(U64)))
    return pg_count, h, acked, hint, bad, claim


@settings(max_examples=300)
@given(corrupted())
def test_one_corrupted_node_never_moves_recovery_below_an_acked_commit(scenario) -> None:
    """Every LSN up to `acked` sits on every segment (a healthy fleet); one node's
    segments claim any hint: recovery finds every acknowledged commit, ends on a CPL and
    leaves LSN space for the next writer."""
    pg_count, h, acked, hint, bad, claim = scenario
    reports = {}
    for pg in range(pg_count):
        reports[pg] = []
        for name in SIX:
            report = h.report(name, pg, set(range(1, acked + 1)), hint=hint)
            if name == bad:
                report.vdl_hint = claim
            reports[pg].append(report)
    plan = plan_recovery(reports, members(range(pg_count)), lal=10)
    assert plan.vdl == acked
    assert plan.truncation[1] <= acked + MAX_LAL


def test_a_higher_membership_epoch_on_one_segment_does_not_enter_the_plan() -> None:
    """Membership epochs are the placement's (the admin path), not the reports': a
    segment whose epoch a frame once raised still reports, and recovery plans as usual."""
    h = History([[0], [0]])
    m = {0: Membership(1, SIX)}
    reports = {0: [h.report(n, 0, {1, 2}, hint=2) for n in SIX[:3]]}
    assert plan_recovery(reports, m, lal=10).vdl == 2


def test_the_writer_does_not_count_an_scl_beyond_what_it_allocated() -> None:
    """A segment whose chain a hostile frame extended acks an SCL above every LSN the
    writer handed out: it must not help a commit into a 'write quorum'."""
    w = WriterCore(VolumeLayout(1, 4, 64), members([0]), StartState(1, 0, 1, {}))
    (rec,) = w.allocate([Change(0, b"\0\0\0\0x")])
    for name in SIX[:3]:
        w.on_ack(0, name, rec.lsn)
    assert not w.on_ack(0, SIX[3], U64) and w.vdl == 0  # three real copies + a liar
    assert w.on_ack(0, SIX[4], rec.lsn) and w.vdl == rec.lsn
