"""Quorum math: PGCL, read/write quorum predicates, the dual quorum of a membership change."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidemark_protocol.quorum import (
    READ_QUORUM,
    WRITE_QUORUM,
    Membership,
    QuorumTracker,
    has_read_quorum,
    has_write_quorum,
    kth_highest,
)

pytestmark = pytest.mark.unit

SIX = ("a0", "a1", "b0", "b1", "c0", "c1")


def test_constants_make_quorums_overlap() -> None:
    assert READ_QUORUM + WRITE_QUORUM > 6 and 2 * WRITE_QUORUM > 6
    m = Membership(1, SIX)
    for r in combinations(SIX, 3):
        for w in combinations(SIX, 4):
            assert set(r) & set(w)
            assert has_read_quorum(m, r) and has_write_quorum(m, w)
    assert not has_write_quorum(m, SIX[:3]) and not has_read_quorum(m, SIX[:2])


def test_a_zone_down_still_writes_and_zone_plus_one_still_reads() -> None:
    m = Membership(1, SIX)
    assert has_write_quorum(m, [n for n in SIX if not n.startswith("a")])
    assert has_read_quorum(m, ["b1", "c0", "c1"])
    assert not has_write_quorum(m, ["b1", "c0", "c1"])


def test_quorum_predicates_ignore_strangers_and_duplicates() -> None:
    m = Membership(1, SIX)
    assert not has_write_quorum(m, ["a0", "a0", "a1", "x", "y", "z"])
    assert not has_read_quorum(m, ["a0", "x", "y"])


@given(st.lists(st.integers(0, 100), max_size=8), st.integers(1, 8))
def test_kth_highest(values, k) -> None:
    got = kth_highest(values, k)
    if len(values) < k:
        assert got == 0
    else:
        assert sum(v >= got for v in values) >= k
        assert sorted(values, reverse=True)[k - 1] == got


@given(st.lists(st.integers(0, 1000), min_size=6, max_size=6))
def test_pgcl_is_fourth_highest_scl(scls) -> None:
    t = QuorumTracker(Membership(1, SIX))
    for name, scl in zip(SIX, scls, strict=True):
        t.observe(name, scl)
    assert t.pgcl() == sorted(scls, reverse=True)[3]
    # every LSN at or below PGCL is held by a write quorum
    assert has_write_quorum(t.membership, [n for n in SIX if t.scl.get(n, 0) >= t.pgcl()])


def test_pgcl_with_missing_acks_and_monotone_observe() -> None:
    t = QuorumTracker(Membership(1, SIX))
    assert t.pgcl() == 0
    for name, scl in zip(SIX[:3], (9, 8, 7), strict=True):
        t.observe(name, scl)
    assert t.pgcl() == 0  # only three segments answered
    t.observe("b1", 5)
    assert t.pgcl() == 5
    t.observe("b1", 3)  # a late, older ack does not lower it
    assert t.scl["b1"] == 5 and t.pgcl() == 5
    t.reset("b1", 3)  # only truncation lowers it
    assert t.pgcl() == 3
    t.observe("stranger", 100)
    assert t.pgcl() == 3
    assert t.complete_segments(7) == ["a0", "a1", "b0"]
    assert t.complete_segments(9) == ["a0"]
    assert t.complete_segments(10) == []


def test_begin_finish_abort_replace_epochs_and_sets() -> None:
    m = Membership(4, SIX)
    assert m.sets == (SIX,) and m.all_members == SIX
    step1 = m.begin_replace("c1", "d0")
    assert step1.epoch == 5 and step1.members == SIX
    assert step1.next_members == ("a0", "a1", "b0", "b1", "c0", "d0")
    assert step1.all_members == (*SIX, "d0") and len(step1.sets) == 2
    done = step1.finish_replace()
    assert done.epoch == 6 and done.members == step1.next_members and done.next_members is None
    back = step1.abort_replace()
    assert back.epoch == 6 and back.members == SIX and back.next_members is None
    with pytest.raises(ValueError):
        step1.begin_replace("a0", "e0")
    with pytest.raises(ValueError):
        m.finish_replace()
    with pytest.raises(ValueError):
        m.abort_replace()
    with pytest.raises(ValueError):
        m.begin_replace("zz", "d0")
    with pytest.raises(ValueError):
        m.begin_replace("a0", "a1")


def test_membership_json_round_trip() -> None:
    m = Membership(4, SIX)
    step1 = m.begin_replace("c1", "d0")
    for x in (m, step1):
        assert Membership.from_json(x.to_json()) == x


def test_dual_quorum_write_needs_both_sets_read_the_old_set() -> None:
    step1 = Membership(1, SIX).begin_replace("c1", "g")
    # A..E hold it: four of each set
    assert has_write_quorum(step1, ["a0", "a1", "b0", "b1"])
    # three of the old set plus the old member: 4/6 of old, only 3/6 of new
    assert not has_write_quorum(step1, ["a0", "a1", "b0", "c1"])
    assert has_write_quorum(step1, ["a0", "a1", "b0", "c1", "g"])
    # reads: 3 of the old set (g may not be hydrated yet: tests/sim
    # test_recovery_during_a_change_reads_the_old_set)
    assert has_read_quorum(step1, ["a0", "a1", "c1"])  # old set only
    assert not has_read_quorum(step1, ["a0", "a1", "g"])  # new set only
    assert not has_read_quorum(step1, ["a0", "c1", "g"])


@given(st.lists(st.integers(0, 50), min_size=7, max_size=7))
def test_dual_quorum_pgcl_is_min_over_both_sets(scls) -> None:
    step1 = Membership(1, SIX).begin_replace("c1", "g")
    t = QuorumTracker(step1)
    for name, scl in zip((*SIX, "g"), scls, strict=True):
        t.observe(name, scl)
    old = sorted(scls[:6], reverse=True)[3]
    new = sorted(scls[:5] + [scls[6]], reverse=True)[3]
    assert t.pgcl() == min(old, new)
    holders = [n for n in (*SIX, "g") if t.scl.get(n, 0) >= t.pgcl()]
    assert has_write_quorum(step1, holders)


@pytest.mark.parametrize("data", [None, [], "m", {"epoch": 1}, {"epoch": 1, "members": "abcdef"},
                                  {"epoch": 1, "members": []}, {"epoch": 1, "members": ["a", "a"]},
                                  {"epoch": 1, "members": ["a", 2]}, {"epoch": "x", "members": ["a"]},
                                  {"epoch": 1, "members": ["a"], "next_members": {"b": 1}}])
def test_a_malformed_membership_is_a_value_error_not_a_crash(data) -> None:
    """What a node answers 400 to (found by the node API fuzzer: `membership: null` was a 500)."""
    with pytest.raises((ValueError, KeyError, TypeError)):
        Membership.from_json(data)
