"""The multi-range page patch: one record per page carrying several byte ranges."""

from __future__ import annotations

import random

import pytest

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.pages import (
    apply_payload,
    apply_redo,
    diff_ranges,
    multi_patch_payload,
    page_redo,
    patch_payload,
)
from tidemark_protocol.records import Record, RecordFlags

pytestmark = pytest.mark.sql


def _apply(old: bytes, redo: list[tuple[bytes, bool]]) -> bytes:
    image = bytearray(old)
    for payload, full in redo:
        apply_payload(image, RecordFlags.FULL_IMAGE if full else RecordFlags.NONE, payload, len(old))
    return bytes(image)


@pytest.mark.parametrize("multi", [True, False])
def test_redo_round_trips_random_edits(multi: bool) -> None:
    rng = random.Random(7)
    for _ in range(300):
        old = bytes(rng.randrange(256) for _ in range(4096)) if rng.random() < 0.5 else bytes(4096)
        new = bytearray(old)
        for _ in range(rng.randrange(0, 12)):
            at = rng.randrange(4096)
            size = rng.randrange(1, 300)
            new[at : at + size] = bytes(rng.randrange(256) for _ in range(len(new[at : at + size])))
        redo = page_redo(old, bytes(new), multi)
        assert _apply(old, redo) == bytes(new)
        if multi:
            assert len(redo) <= 1, "one record per page"


def test_small_edits_are_smaller_than_a_page_and_full_image_wins_when_smaller() -> None:
    old = bytes(4096)
    new = bytearray(old)
    new[10:14] = b"abcd"
    new[4000:4008] = b"12345678"
    (payload, full), = page_redo(old, bytes(new))
    assert not full and len(payload) < 40
    (payload, full), = page_redo(bytes(b"\1" * 4096), b"\2" * 100 + bytes(3996))
    assert full and payload == b"\2" * 100  # trailing zeros dropped from the image


def test_diff_merges_close_ranges() -> None:
    old = bytes(64)
    new = bytearray(old)
    new[1] = new[3] = new[40] = 1
    assert [(o, len(d)) for o, d in diff_ranges(old, bytes(new))] == [(1, 3), (40, 1)]


def test_old_single_patches_still_apply() -> None:
    record = Record(1, 0, 0, 0, 0, RecordFlags.CPL, patch_payload(2, b"ab"))
    assert apply_redo(b"", record, 8) == b"\0\0ab\0\0\0\0"


@pytest.mark.parametrize("payload", [
    multi_patch_payload([(6, b"abc")]),  # beyond the page
    multi_patch_payload([(0, b"ab")])[:-1] + b"\0\0\0",  # length field lies
    multi_patch_payload([]) + b"\1",  # truncated range header
])
def test_malformed_multi_patches_are_refused_and_change_nothing(payload: bytes) -> None:
    image = bytearray(b"x" * 8)
    with pytest.raises(MalformedFrame):
        apply_payload(image, RecordFlags.NONE, payload, 8)
    assert image == b"x" * 8
