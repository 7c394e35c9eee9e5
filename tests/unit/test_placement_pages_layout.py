"""Placement (2 per zone, distinct nodes, even spread), page redo and volume layout."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_redo, empty_page, patch_payload
from tidemark_protocol.placement import NodeInfo, PlacementError, place, validate_topology
from tidemark_protocol.records import Record, RecordFlags

pytestmark = pytest.mark.unit


def fleet(per_zone: dict[str, int]) -> list[NodeInfo]:
    return [NodeInfo(f"{z}-{i}", z) for z, n in per_zone.items() for i in range(n)]


@given(
    st.dictionaries(st.sampled_from("abc"), st.integers(2, 7), min_size=3, max_size=3),
    st.integers(1, 40),
)
def test_placement_rules(per_zone, pg_count) -> None:
    nodes = fleet(per_zone)
    zone_of = {n.name: n.zone for n in nodes}
    placement = place(list(range(pg_count)), nodes)
    assert sorted(placement) == list(range(pg_count))
    load = Counter()
    for members in placement.values():
        assert len(members) == 6 and len(set(members)) == 6
        assert Counter(zone_of[m] for m in members) == {"a": 2, "b": 2, "c": 2}
        load.update(members)
    for zone in "abc":
        counts = [load.get(n.name, 0) for n in nodes if n.zone == zone]
        assert max(counts) - min(counts) <= 1  # even spread within each zone
    assert place(list(range(pg_count)), list(reversed(nodes))) == placement  # deterministic


def test_existing_pgs_keep_members_and_new_ones_fill_the_least_loaded() -> None:
    nodes = fleet({"a": 3, "b": 3, "c": 3})
    first = place([0, 1], nodes)
    more = place([0, 1, 2, 3], nodes, existing=first)
    assert more[0] == first[0] and more[1] == first[1]
    load = Counter(m for ms in more.values() for m in ms)
    assert max(load.values()) - min(load.values()) <= 1


@pytest.mark.parametrize(
    "per_zone, match",
    [
        ({"a": 2, "b": 2}, "3 zones"),
        ({"a": 2, "b": 2, "c": 2, "d": 2}, "3 zones"),
        ({"a": 2, "b": 1, "c": 3}, "short zones"),
    ],
)
def test_topology_errors(per_zone, match) -> None:
    with pytest.raises(PlacementError, match=match):
        place([0], fleet(per_zone))
    with pytest.raises(PlacementError):
        validate_topology(fleet(per_zone))


def _rec(payload: bytes, full: bool = False) -> Record:
    flags = RecordFlags.CPL | (RecordFlags.FULL_IMAGE if full else RecordFlags.NONE)
    return Record(1, 0, 0, 0, 0, flags, payload)


def test_apply_redo_patch_and_full_image() -> None:
    page = apply_redo(b"", _rec(patch_payload(2, b"ab")), 8)
    assert page == b"\0\0ab\0\0\0\0"
    page = apply_redo(page, _rec(patch_payload(6, b"yz")), 8)
    assert page == b"\0\0ab\0\0yz"
    assert apply_redo(page, _rec(b"full", full=True), 8) == b"full\0\0\0\0"
    assert apply_redo(page, _rec(b"", full=True), 8) == empty_page(8)
    assert empty_page(8) == bytes(8)


@pytest.mark.parametrize(
    "record",
    [
        _rec(b"\0\0"),  # shorter than the offset
        _rec(patch_payload(7, b"ab")),  # beyond the page
        _rec(b"123456789", full=True),  # image larger than the page
    ],
)
def test_apply_redo_rejects_bad_payloads(record) -> None:
    with pytest.raises(MalformedFrame):
        apply_redo(empty_page(8), record, 8)


def test_layout() -> None:
    lay = VolumeLayout(3, 10, 4096)
    assert lay.page_count == 30
    assert [lay.pg_of(p) for p in (0, 9, 10, 29)] == [0, 0, 1, 2]
    for bad in (-1, 30):
        with pytest.raises(ValueError):
            lay.pg_of(bad)
    assert VolumeLayout.from_json(lay.to_json()) == lay
    assert VolumeLayout.from_json({"pg_count": 1, "pages_per_pg": 2}).page_size == 4096
    for args in ((0, 1), (1, 0), (1, 1, 8)):
        with pytest.raises(ValueError):
            VolumeLayout(*args)
