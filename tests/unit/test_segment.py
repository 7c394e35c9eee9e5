"""SegmentLog: the SCL chain, holes, duplicates, epochs, seal/truncation, rebuild, forgetting."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidemark_protocol.errors import NeedsSeal, StaleEpoch
from tidemark_protocol.records import Record, RecordFlags
from tidemark_protocol.segment import SegmentLog, SegmentMeta, in_ranges

pytestmark = pytest.mark.unit

PG = 3


def chain_records(lsns: list[int], first_prev: int = 0, pg: int = PG) -> list[Record]:
    out, prev = [], first_prev
    for lsn in lsns:
        out.append(Record(lsn, pg, lsn % 7, prev, 0, RecordFlags.CPL, b""))
        prev = lsn
    return out


def new_log(epoch: int = 1, **kw) -> SegmentLog:
    return SegmentLog(SegmentMeta(PG, volume_epoch=epoch, **kw))


def rebuilt(log: SegmentLog, store: dict[int, Record]) -> SegmentLog:
    meta = copy.deepcopy(log.meta)
    return SegmentLog(
        meta, [(r.lsn, r.prev_lsn_in_pg) for r in store.values() if r.lsn > meta.floor]
    )


def state(log: SegmentLog) -> tuple:
    return (log.scl, list(log.chain), dict(log.pending), set(log.above), log.meta.to_json())


sparse_lsns = st.lists(st.integers(1, 10_000), min_size=1, max_size=40, unique=True).map(sorted)


# -- the chain under any arrival order ----------------------------------------------------------
@given(sparse_lsns, st.randoms(use_true_random=False), st.integers(1, 5))
def test_scl_under_any_arrival_order_is_the_chain_end(lsns, rnd, chunk) -> None:
    records = chain_records(lsns)
    shuffled = records[:]
    rnd.shuffle(shuffled)
    log = new_log()
    fresh = []
    for i in range(0, len(shuffled), chunk):
        fresh += log.accept(shuffled[i : i + chunk])
        # SCL is always the end of the unbroken prefix received so far.
        got = {r.lsn for r in fresh}
        prefix_end = 0
        for lsn in lsns:
            if lsn not in got:
                break
            prefix_end = lsn
        assert log.scl == prefix_end
        assert log.has_holes() == (len(got) > len([x for x in lsns if x <= prefix_end]))
    assert sorted(r.lsn for r in fresh) == lsns
    assert log.scl == lsns[-1] and not log.has_holes() and log.max_lsn == lsns[-1]
    assert list(log.chain) == lsns
    # Every duplicate is ignored, in any order.
    assert log.accept(shuffled) == []
    assert log.scl == lsns[-1]


@given(sparse_lsns, st.data())
def test_holes_stop_the_scl(lsns, data) -> None:
    records = chain_records(lsns)
    missing = data.draw(st.sets(st.sampled_from(lsns), min_size=1))
    log = new_log()
    held = [r for r in records if r.lsn not in missing]
    assert log.accept(data.draw(st.permutations(held))) == log.accept([]) or True
    first_hole = min(missing)
    expect = max([x for x in lsns if x < first_hole], default=0)
    assert log.scl == expect
    for lsn in lsns:
        assert log.has(lsn) == (lsn not in missing)
    assert log.has_holes() == any(r.lsn > first_hole for r in held)
    assert log.max_lsn == max([r.lsn for r in held], default=0)
    # Filling the holes (e.g. by gossip) completes the chain.
    fill = [r for r in records if r.lsn in missing]
    assert sorted(r.lsn for r in log.accept(fill)) == sorted(missing)
    assert log.scl == lsns[-1] and not log.has_holes()


def test_duplicates_within_one_batch_and_other_pgs_are_ignored() -> None:
    log = new_log()
    r1, r2, r3 = chain_records([1, 2, 3])
    other = Record(4, PG + 1, 0, 3, 0, RecordFlags.NONE, b"")
    fresh = log.accept([r3, r3, r1, other, r1, r2])
    assert [r.lsn for r in fresh] == [3, 1, 2]
    assert log.scl == 3 and not log.has(4)
    assert log.accept([r2, r3]) == []


def test_has_for_pending_and_chain() -> None:
    log = new_log()
    log.accept(chain_records([1, 2, 5, 9])[2:])  # 5 (prev 2) and 9 (prev 5) wait for 1, 2
    assert log.scl == 0 and log.has(5) and log.has(9) and not log.has(1)
    assert log.max_lsn == 9 and log.has_holes()
    log.accept(chain_records([1, 2]))
    assert log.scl == 9 and not log.has_holes() and not log.has(3)


# -- epochs -------------------------------------------------------------------------------
def test_epochs() -> None:
    log = new_log(epoch=3, membership_epoch=2)
    log.check_epochs(3, 2)
    log.check_epochs(3, 5)  # a newer membership epoch is fine (the writer knows better)
    with pytest.raises(StaleEpoch):
        log.check_epochs(2, 2)
    with pytest.raises(NeedsSeal):
        log.check_epochs(4, 2)
    with pytest.raises(StaleEpoch):
        log.check_epochs(3, 1)
    log.note_membership_epoch(5)
    log.note_membership_epoch(4)  # never goes back
    assert log.meta.membership_epoch == 5
    with pytest.raises(StaleEpoch):
        log.check_epochs(3, 4)
    with pytest.raises(StaleEpoch):
        log.seal(2, [])
    log.seal(4, [])
    log.check_epochs(4, 5)
    assert log.meta.volume_epoch == 4


# -- seal and truncation ----------------------------------------------------------------------
def test_seal_truncates_chain_and_pending() -> None:
    log = new_log()
    recs = chain_records([1, 2, 3, 4, 5, 6, 8, 9, 11, 12])
    # hold 1..6 (chain), 9 and 12 pending (8 and 11 missing)
    log.accept([r for r in recs if r.lsn not in (8, 11)])
    assert log.scl == 6 and log.above == {9, 12}
    result = log.seal(2, [(4, 10)])
    assert result.scl_before == 6 and result.scl_after == 4
    assert result.dropped == [5, 6, 9]
    assert log.scl == 4 and list(log.chain) == [1, 2, 3, 4]
    assert log.above == {12} and log.pending == {11: 12}
    assert log.meta.truncations == [(4, 10)] and log.meta.volume_epoch == 2
    # strays in the range are refused from now on; the new epoch's records link on
    assert log.accept(chain_records([5, 6])) == []
    new = [
        Record(13, PG, 0, 4, 0, RecordFlags.CPL, b""),
        Record(14, PG, 0, 13, 0, RecordFlags.CPL, b""),
    ]
    assert [r.lsn for r in log.accept(new)] == [13, 14]
    assert log.scl == 14 and log.above == {12}


def test_seal_is_idempotent_and_keeps_known_ranges() -> None:
    log = new_log()
    log.accept(chain_records([1, 2, 3]))
    log.seal(2, [(2, 10)])
    again = log.seal(2, [(2, 10)])
    assert again.dropped == [] and log.scl == 2
    log.seal(3, [(2, 10), (20, 30)])
    assert log.meta.truncations == [(2, 10), (20, 30)] and log.meta.volume_epoch == 3


def test_seal_keeps_records_above_the_range_end() -> None:
    """A segment not sealed by the last recovery can already hold that writer's records
    (via gossip): sealing must delete only what lies inside the ranges."""
    log = new_log(epoch=1)
    old = chain_records([1, 2, 3, 4])  # 3, 4: the crashed writer's strays above VDL 2
    new = chain_records([11, 12], first_prev=2)  # the next writer, after truncation (2, 10]
    log.accept(old)
    # 11 follows 2 but 3 already does: a stray of one of the epochs, refused for now;
    # 12 (prev 11) waits.
    assert [r.lsn for r in log.accept(new)] == [12]
    assert log.scl == 4 and log.above == {12}
    result = log.seal(2, [(2, 10)])
    assert result.dropped == [3, 4]
    assert log.scl == 2 and log.above == {12}
    assert [r.lsn for r in log.accept(new)] == [11]  # gossip brings it again
    assert log.scl == 12 and list(log.chain) == [1, 2, 11, 12] and not log.has_holes()

    log2 = new_log(epoch=1)
    log2.accept(chain_records([1, 2]))
    log2.accept(new)  # linked straight behind 2
    assert log2.scl == 12
    result = log2.seal(2, [(2, 10)])
    assert result.dropped == [] and log2.scl == 12 and list(log2.chain) == [1, 2, 11, 12]


@given(
    st.integers(1, 30),  # records of epoch 1
    st.data(),
)
@settings(max_examples=200)
def test_seal_model(n1, data) -> None:
    """Epoch 1 writes LSNs 1..n1, recovery keeps (.., v] and voids (v, e], epoch 2 writes
    above e. Whatever arrived, in any order, the seal leaves exactly the legit chain."""
    v = data.draw(st.integers(0, n1))
    e = n1 + data.draw(st.integers(0, 5))
    n2 = data.draw(st.integers(0, 10))
    e1 = chain_records(list(range(1, n1 + 1)))
    e2 = chain_records(list(range(e + 1, e + 1 + n2)), first_prev=v)
    got1 = data.draw(st.lists(st.sampled_from(e1), unique_by=lambda r: r.lsn))
    got2 = data.draw(st.lists(st.sampled_from(e2), unique_by=lambda r: r.lsn)) if e2 else []
    log = new_log()
    store = {r.lsn: r for r in log.accept(got1)}
    result = log.seal(2, [(v, e)])
    for lsn in result.dropped:
        del store[lsn]
    assert result.dropped == sorted(r.lsn for r in got1 if r.lsn > v)
    store.update({r.lsn: r for r in log.accept(got2)})
    legit = [r.lsn for r in e1 if r.lsn <= v] + [r.lsn for r in e2]
    held = set(store)
    expect = 0
    for lsn in legit:
        if lsn not in held:
            break
        expect = lsn
    assert log.scl == expect
    assert not any(in_ranges(lsn, [(v, e)]) for lsn in held)
    assert state(rebuilt(log, store))[:4] == state(log)[:4]


def test_one_record_per_back_link_across_epochs() -> None:
    """Two records claiming the same predecessor only happen across epochs (a stray of a
    truncated epoch and the next writer's record). The first one held wins until a seal;
    the chain and a rebuild from storage always agree."""
    for order in ([1, 3, 11, 2], [1, 11, 3, 2], [3, 1, 2, 11], [11, 2, 1, 3]):
        log = new_log()
        recs = {1: (1, 0), 2: (2, 1), 3: (3, 2), 11: (11, 2)}
        store = {}
        for lsn in order:
            lsn_, prev = recs[lsn]
            for r in log.accept([Record(lsn_, PG, 0, prev, 0, RecordFlags.CPL, b"")]):
                store[r.lsn] = r
        assert not ({3, 11} <= set(store)), order  # never both
        assert log.scl in (3, 11)
        assert state(rebuilt(log, store)) == state(log)
        result = log.seal(2, [(2, 10)])
        assert log.scl == (11 if 11 in store else 2) and 3 not in log.above
        for lsn in result.dropped:
            del store[lsn]
        log.accept([Record(11, PG, 0, 2, 0, RecordFlags.CPL, b"")])
        assert log.scl == 11
        assert log.accept([Record(3, PG, 0, 2, 0, RecordFlags.CPL, b"")]) == []


# -- rebuild from storage -------------------------------------------------------------------
@given(sparse_lsns, st.data())
def test_rebuild_from_stored_pairs_gives_the_same_state(lsns, data) -> None:
    records = chain_records(lsns)
    got = data.draw(st.lists(st.sampled_from(records), unique_by=lambda r: r.lsn))
    log = new_log(epoch=2, membership_epoch=4)
    store = {r.lsn: r for r in log.accept(got)}
    log.note_vdl(data.draw(st.integers(0, 10_000)))
    again = rebuilt(log, store)
    assert state(again) == state(log)
    # and both go on identically
    rest = [r for r in records if r.lsn not in store]
    assert [r.lsn for r in log.accept(rest)] == [r.lsn for r in again.accept(rest)]
    assert state(again) == state(log)


def test_rebuild_refuses_missing_records() -> None:
    log = new_log()
    log.accept(chain_records([1, 2, 3]))
    meta = copy.deepcopy(log.meta)
    with pytest.raises(ValueError, match="persisted SCL"):
        SegmentLog(meta, [(1, 0), (3, 2)])


def test_meta_json_round_trip() -> None:
    meta = SegmentMeta(7, 3, 2, 40, 30, 35, [(5, 9), (40, 50)])
    assert SegmentMeta.from_json(meta.to_json()) == meta
    assert SegmentMeta.from_json({"pg": 1}) == SegmentMeta(1)


# -- forgetting below the VDL hint ---------------------------------------------------------------
def test_note_vdl_forgets_but_has_and_seal_stay_correct() -> None:
    lsns = list(range(2, 6002, 2))  # 3000 records of this PG (odd LSNs belong elsewhere)
    records = chain_records(lsns)
    log = new_log()
    store = {r.lsn: r for r in log.accept(records[:2500])}
    log.note_vdl(4000)
    floor = log.meta.floor
    assert floor == 4000 and log.meta.vdl_hint == 4000
    assert log.chain[0] > floor and len(log.chain) == 500
    assert log.scl == 5000
    for lsn in (2, 1000, 4000, 4002, 5000):
        assert log.has(lsn)
    assert not log.has(4001) and not log.has(5002)
    # duplicates from below the floor are still ignored
    assert log.accept(records[:10]) == []
    # a lower or equal hint changes nothing
    log.note_vdl(100)
    assert log.meta.vdl_hint == 4000 and log.meta.floor == floor
    # rebuild from the records above the floor
    again = rebuilt(log, store)
    assert state(again) == state(log)
    # truncation at or above the floor works; below it is refused
    with pytest.raises(ValueError, match="below floor"):
        copy.deepcopy(log).seal(2, [(3998, 9000)])
    result = log.seal(2, [(4000, 9000)])
    assert result.dropped == lsns[2000:2500]
    assert log.scl == 4000 and log.has(4000) and not log.has(4002) and len(log.chain) == 0
    nxt = Record(9001, PG, 0, 4000, 0, RecordFlags.CPL, b"")
    assert log.accept([nxt]) == [nxt] and log.scl == 9001


def test_note_vdl_small_chain_is_not_trimmed_and_hint_above_scl_is_safe() -> None:
    log = new_log()
    log.accept(chain_records([1, 2, 3]))
    log.note_vdl(50)  # the writer knows more than this segment holds: adopted up to its SCL
    assert log.meta.vdl_hint == 3 and log.meta.floor == 0 and list(log.chain) == [1, 2, 3]
    big = new_log()
    big.accept(chain_records(list(range(1, 2001))))
    big.note_vdl(10_000)  # trims no further than the segment's own SCL
    assert big.meta.floor == 2000 and big.scl == 2000 and len(big.chain) == 0
    assert big.has(1) and big.has(2000) and not big.has(2001)
    r = Record(2001, PG, 0, 2000, 0, RecordFlags.CPL, b"")
    assert big.accept([r]) == [r] and big.scl == 2001
