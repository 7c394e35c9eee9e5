"""WriterCore: dense LSNs, back-links, PGCL/VCL/VDL, commit completion, LAL, read tails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidemark_protocol.errors import BackPressure
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership
from tidemark_protocol.records import RecordFlags
from tidemark_protocol.writer_core import Change, StartState, WriterCore

pytestmark = pytest.mark.unit

SIX = ("a0", "a1", "b0", "b1", "c0", "c1")
LAYOUT = VolumeLayout(pg_count=2, pages_per_pg=10, page_size=64)  # pages 0-9: pg 0, 10-19: pg 1


def core(lal: int = 1000, start: StartState | None = None) -> WriterCore:
    ms = {pg: Membership(1, SIX) for pg in range(LAYOUT.pg_count)}
    return WriterCore(LAYOUT, ms, start or StartState(1, 0, 1, {}), lal=lal)


def ch(page: int) -> Change:
    return Change(page, b"\0\0\0\0x")


def ack_quorum(w: WriterCore, pg: int, scl: int, n: int = 4) -> bool:
    moved = False
    for name in SIX[:n]:
        moved |= w.on_ack(pg, name, scl)
    return moved


def test_dense_lsns_cpl_and_back_links() -> None:
    w = core()
    a = w.allocate([ch(0), ch(11), ch(0)])
    b = w.allocate([ch(12)])
    c = w.allocate([Change(1, b"img", full_image=True)])
    assert [r.lsn for r in a + b + c] == [1, 2, 3, 4, 5]
    assert [r.is_cpl for r in a + b + c] == [False, False, True, True, True]
    assert [r.pg for r in a + b + c] == [0, 1, 0, 1, 0]
    assert [r.prev_lsn_in_pg for r in a + b + c] == [0, 0, 1, 2, 3]
    assert [r.prev_lsn_of_page for r in a + b + c] == [0, 0, 1, 0, 0]
    assert c[0].flags == RecordFlags.CPL | RecordFlags.FULL_IMAGE
    assert w.next_lsn == 6
    with pytest.raises(ValueError):
        w.allocate([])
    with pytest.raises(ValueError):
        w.allocate([ch(20)])  # outside the volume


def test_vdl_only_at_cpls() -> None:
    w = core()
    w.allocate([ch(0), ch(1), ch(2)])  # 1, 2, 3(CPL) all pg 0
    assert not ack_quorum(w, 0, 2)
    assert w.vcl == 2 and w.vdl == 0 and w.pgcl(0) == 2
    assert ack_quorum(w, 0, 3)
    assert w.vcl == 3 and w.vdl == 3


def test_vdl_never_passes_a_lsn_without_quorum() -> None:
    w = core()
    w.allocate([ch(0)])  # 1 pg0
    w.allocate([ch(10)])  # 2 pg1
    w.allocate([ch(1)])  # 3 pg0
    ack_quorum(w, 0, 3)
    assert w.vdl == 1  # 2 (pg 1) is not in a quorum yet, so 3 cannot count
    ack_quorum(w, 1, 2, n=3)
    assert w.vdl == 1 and w.pgcl(1) == 0
    w.on_ack(1, "c1", 2)
    assert w.pgcl(1) == 2 and w.vdl == 3 and w.vcl == 3


def test_late_and_duplicate_acks_do_not_move_anything_back() -> None:
    w = core()
    w.allocate([ch(0)])
    w.allocate([ch(0)])
    ack_quorum(w, 0, 2)
    assert w.vdl == 2
    assert not ack_quorum(w, 0, 1)
    assert w.vdl == 2 and w.scl(0, "a0") == 2 and w.scl(0, "zz") == 0


def test_unstable_holds_records_until_their_pg_quorum() -> None:
    w = core()
    w.allocate([ch(0), ch(10)])
    w.allocate([ch(1)])
    assert [r.lsn for r in w.unstable[0]] == [1, 3] and [r.lsn for r in w.unstable[1]] == [2]
    ack_quorum(w, 0, 1)
    assert [r.lsn for r in w.unstable[0]] == [3]
    ack_quorum(w, 0, 3)
    ack_quorum(w, 1, 2)
    assert not w.unstable[0] and not w.unstable[1]


@settings(max_examples=150)
@given(st.data())
def test_watermarks_property(data) -> None:
    """Random mini-transactions and random (truthful) acks: VDL is always a CPL, never
    passes an LSN outside its PG's write quorum, never decreases; commits complete."""
    w = core()
    held: dict[tuple[int, str], set[int]] = {(pg, n): set() for pg in (0, 1) for n in SIX}
    pg_lsns: dict[int, list[int]] = {0: [], 1: []}
    cpls: set[int] = set()
    last_vdl = 0
    for _ in range(data.draw(st.integers(1, 25))):
        if data.draw(st.booleans()):
            pages = data.draw(st.lists(st.integers(0, 19), min_size=1, max_size=4))
            recs = w.allocate([ch(p) for p in pages])
            cpls.add(recs[-1].lsn)
            for r in recs:
                pg_lsns[r.pg].append(r.lsn)
                for n in data.draw(st.sets(st.sampled_from(SIX))):
                    held[(r.pg, n)].add(r.lsn)
        pg = data.draw(st.integers(0, 1))
        seg = data.draw(st.sampled_from(SIX))
        # the segment's SCL: end of the unbroken run of its PG's LSNs it holds
        scl = 0
        for lsn in pg_lsns[pg]:
            if lsn not in held[(pg, seg)]:
                break
            scl = lsn
        w.on_ack(pg, seg, scl)
        assert w.vdl >= last_vdl
        last_vdl = w.vdl
        assert w.vdl == 0 or w.vdl in cpls
        assert w.vdl <= w.vcl
        for p in (0, 1):
            for lsn in pg_lsns[p]:
                if lsn <= w.vcl:
                    assert sum(lsn in held[(p, n)] for n in SIX) >= 4
    # heal: every segment gets everything
    for p in (0, 1):
        for n in SIX:
            w.on_ack(p, n, pg_lsns[p][-1] if pg_lsns[p] else 0)
    assert w.vdl == max(cpls, default=0) and w.vcl == w.next_lsn - 1


def test_lal_back_pressure() -> None:
    w = core(lal=5)
    w.allocate([ch(0), ch(0), ch(0)])  # 1..3
    assert w.can_allocate(2) and not w.can_allocate(3)
    with pytest.raises(BackPressure):
        w.allocate([ch(0), ch(0), ch(0)])
    assert w.next_lsn == 4  # a refused allocation allocates nothing
    w.allocate([ch(0), ch(0)])  # 4, 5
    with pytest.raises(BackPressure):
        w.allocate([ch(0)])
    ack_quorum(w, 0, 3)
    assert w.vdl == 3 and w.lsn_limit == 8
    w.allocate([ch(0), ch(0), ch(0)])
    assert not w.can_allocate()


def test_lal_after_recovery_counts_from_the_epoch_start() -> None:
    # recovered VDL 10, truncation (10, 1010]: the new epoch starts at 1011
    w = core(lal=5, start=StartState(2, 10, 1011, {0: 9, 1: 10}))
    assert w.vdl == 10 and w.vcl == 10 and w.volume_epoch == 2
    recs = w.allocate([ch(0), ch(10)])
    assert [r.lsn for r in recs] == [1011, 1012]
    assert [r.prev_lsn_in_pg for r in recs] == [9, 10]  # chains on from the PG tails
    assert w.lsn_limit == 1015
    w.allocate([ch(0), ch(0), ch(0)])
    with pytest.raises(BackPressure):
        w.allocate([ch(0)])
    ack_quorum(w, 0, 1015)
    ack_quorum(w, 1, 1012)
    assert w.vdl == 1015 and w.lsn_limit == 1020


def test_read_tail_and_candidates() -> None:
    w = core(start=StartState(2, 10, 21, {0: 9, 1: 10}))
    w.allocate([ch(0)])  # 21 pg0
    w.allocate([ch(10)])  # 22 pg1
    w.allocate([ch(1)])  # 23 pg0
    assert w.read_tail(0, 10) == 9 and w.read_tail(1, 10) == 10
    assert w.read_tail(0, 22) == 21 and w.read_tail(1, 22) == 22
    assert w.read_tail(0, 100) == 23
    with pytest.raises(ValueError, match="read floor"):
        w.read_tail(0, 8)
    w.on_ack(0, "a0", 23)
    w.on_ack(0, "b0", 21)
    w.on_ack(0, "c0", 9)
    assert w.read_candidates(0, 22) == ["a0", "b0"]
    assert w.read_candidates(0, 10) == ["a0", "b0", "c0"]
    fresh = core()
    assert fresh.read_tail(0, 0) == 0 and fresh.read_tail(1, 50) == 0


def test_forget_below_keeps_read_tails_above_the_floor() -> None:
    w = core(lal=100_000)
    for i in range(6000):
        w.allocate([ch(i % 20)])
    w.forget_below(4000)
    assert w.read_tail(0, 4000) == max(lsn for lsn in range(1, 4001) if (lsn - 1) % 20 < 10)
    assert w.read_tail(1, 5999) == max(lsn for lsn in range(1, 6000) if (lsn - 1) % 20 >= 10)
    with pytest.raises(ValueError):
        w.read_tail(0, 100)


def test_set_membership_dual_quorum() -> None:
    w = core()
    w.allocate([ch(0)])
    w.allocate([ch(0)])
    ack_quorum(w, 0, 1)
    ack_quorum(w, 1, 0)
    assert w.vdl == 1
    step1 = Membership(1, SIX).begin_replace("c1", "g")
    w.set_membership(0, step1)
    assert w.pgcl(0) == 1  # never lowered by a membership change
    for n in ("a0", "a1", "b0", "b1"):
        w.on_ack(0, n, 2)
    assert w.vdl == 2  # A..D are in both sets
    w.allocate([ch(0)])  # 3
    for n in ("a0", "a1", "b0", "c1"):
        w.on_ack(0, n, 3)
    assert w.vdl == 2  # 4/6 of the old set, only 3/6 of the new one
    w.on_ack(0, "g", 3)
    assert w.vdl == 3


def test_membership_change_that_raises_pgcl_releases_unstable_records() -> None:
    w = core()
    step1 = Membership(1, SIX).begin_replace("c1", "g")
    w.set_membership(0, step1)
    w.allocate([ch(0)])  # 1
    for n in ("a0", "a1", "b0", "g"):  # 4/6 of the new set, 3/6 of the old one
        w.on_ack(0, n, 1)
    ack_quorum(w, 1, 0)
    assert w.vdl == 0 and [r.lsn for r in w.unstable[0]] == [1]
    w.set_membership(0, step1.finish_replace())  # c1 is gone: 1 is in a write quorum now
    assert w.pgcl(0) == 1 and w.vdl == 1
    assert not w.unstable[0]  # nothing left to re-send
    w.on_ack(0, "b1", 1)
    assert not w.unstable[0]
