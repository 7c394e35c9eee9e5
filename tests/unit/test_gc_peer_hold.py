"""Log GC keeps what a fellow member still catching up needs (found on kind: a zone back
from an outage found its peers' log gone, never caught up, yet counted as healthy)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tidemark_node.gc import peer_hold
from tidemark_node.gossip import note_peer_progress

pytestmark = pytest.mark.unit

MEMBERS = ["a1", "a2", "b1", "b2", "c1", "c2"]


def _state_and_segment(scl: int = 30_000_000, log_gc: int = 0) -> tuple[SimpleNamespace, SimpleNamespace]:
    seg = SimpleNamespace(pg=0, durable_scl=scl, log_gc_lsn=log_gc,
                          membership=SimpleNamespace(all_members=MEMBERS), meta=SimpleNamespace(volume_epoch=5))
    state = SimpleNamespace(name="a1", segments={0: seg}, peer_progress={},
                            settings=SimpleNamespace(gc_peer_hold=600.0))
    return state, seg


def _status(scl: int, epoch: int = 5) -> dict[int, dict]:
    return {0: {"scl": scl, "volume_epoch": epoch}}


def test_a_member_catching_up_holds_the_log_it_lacks_until_it_stops_moving() -> None:
    state, seg = _state_and_segment()
    peers = {n: _status(30_000_000) for n in MEMBERS[1:]}
    peers["c1"] = _status(10_070_000)  # back from an outage, far behind (a new epoch jumped the LSNs)
    note_peer_progress(state, peers, now=100.0)
    assert peer_hold(state, seg, now=100.0) == 10_070_000
    # unreachable from now on: its last entry holds for gc_peer_hold seconds, then GC goes on
    note_peer_progress(state, {n: s for n, s in peers.items() if n != "c1"}, now=200.0)
    assert peer_hold(state, seg, now=699.0) == 10_070_000
    assert peer_hold(state, seg, now=701.0) == 1 << 63
    # reachable and still moving: held again from its new SCL
    note_peer_progress(state, {**peers, "c1": _status(20_000_000)}, now=710.0)
    assert peer_hold(state, seg, now=720.0) == 20_000_000


def test_no_hold_for_members_level_with_us_from_another_epoch_or_beyond_help() -> None:
    state, seg = _state_and_segment(log_gc=15_000_000)
    note_peer_progress(state, {"a2": _status(30_000_000), "b1": _status(12_000_000),
                               "b2": _status(11_000_000, epoch=4)}, now=1.0)
    # a2 is level; b1 needs records we already collected (a rebuild's job, not GC's); b2
    # reports another volume epoch
    assert peer_hold(state, seg, now=2.0) == 1 << 63
