"""The move patch: a page whose cells SQLite shifted by a few bytes (a grown cell, a
defragmented page) is carried as a few moves instead of a 3 KB byte diff."""

from __future__ import annotations

import random

import apsw
import pytest

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.pages import (
    LITERAL,
    MOVE_MARK,
    apply_payload,
    diff_ranges,
    move_ops,
    move_patch_payload,
    multi_patch_payload,
    page_redo,
)
from tidemark_protocol.records import RecordFlags

pytestmark = pytest.mark.sql
PAGE = 4096


def _apply(old: bytes, redo: list[tuple[bytes, bool]]) -> bytes:
    image = bytearray(old)
    for payload, full in redo:
        apply_payload(image, RecordFlags.FULL_IMAGE if full else RecordFlags.NONE, payload, len(old))
    return bytes(image)


def _shifted(rng: random.Random, old: bytes) -> bytes:
    """Blocks of `old` moved by a few bytes, plus a few edits: what SQLite does to a page."""
    new = bytearray(old)
    for _ in range(rng.randrange(1, 4)):
        start = rng.randrange(PAGE - 200)
        size = rng.randrange(16, PAGE - start - 20)
        shift = rng.randrange(-16, 17)
        dst = min(max(start + shift, 0), PAGE - size)
        new[dst:dst + size] = old[start:start + size]
    for _ in range(rng.randrange(0, 4)):
        at = rng.randrange(PAGE - 8)
        new[at:at + 8] = bytes(rng.randrange(256) for _ in range(8))
    return bytes(new)


def test_shifted_blocks_round_trip_and_beat_the_byte_diff() -> None:
    rng = random.Random(11)
    smaller = 0
    for _ in range(200):
        old = bytes(rng.randrange(256) for _ in range(PAGE))
        new = _shifted(rng, old)
        redo = page_redo(old, new)
        assert _apply(old, redo) == new
        assert len(redo) <= 1, "one record per page"
        ops = move_ops(old, new, diff_ranges(old, new))
        assert _apply(old, [(move_patch_payload(ops), False)]) == new
        if redo and not redo[0][1] and int.from_bytes(redo[0][0][:4], "little") == MOVE_MARK:
            smaller += 1
    assert smaller > 150, f"the move patch won only {smaller} of 200 shifted pages"


def test_random_edits_still_round_trip() -> None:
    rng = random.Random(5)
    for _ in range(200):
        old = bytes(rng.randrange(256) for _ in range(PAGE)) if rng.random() < 0.5 else bytes(PAGE)
        new = bytearray(old)
        for _ in range(rng.randrange(0, 12)):
            at = rng.randrange(PAGE)
            new[at:at + rng.randrange(1, 300)] = bytes(rng.randrange(256) for _ in range(300))[:len(new[at:])]
        new = new[:PAGE]
        assert _apply(old, page_redo(old, bytes(new))) == bytes(new)


def test_sqlite_grown_cells_cost_a_tenth_of_the_byte_diff(tmp_path) -> None:
    """pgbench's accounts table bulk-loaded (pages packed full), then balances updated
    (a cell grows by two bytes and SQLite shifts the rest): the redo the instance ships."""
    path = str(tmp_path / "db")
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("CREATE TABLE accounts(aid INT NOT NULL, bid INT, abalance INT, filler CHAR(84))")
    conn.execute("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < 20000) "
                 "INSERT INTO accounts SELECT x, 1, 0, '' FROM s")
    rng = random.Random(3)
    byte_diff = moved = 0
    with open(path, "rb") as f:
        before = f.read()
        for _ in range(60):
            conn.execute("UPDATE accounts SET abalance = ? WHERE aid = ?",
                         (rng.randrange(-5000, 5000) or 1, rng.randrange(1, 20000)))
            f.seek(0)
            after = f.read()
            for i in range(min(len(before), len(after)) // PAGE):
                old, new = before[i * PAGE:(i + 1) * PAGE], after[i * PAGE:(i + 1) * PAGE]
                if old != new:
                    byte_diff += len(multi_patch_payload(diff_ranges(old, new)))
                    redo = page_redo(old, new)
                    assert _apply(old, redo) == new
                    moved += sum(len(p) for p, _ in redo)
            before = after
    assert moved * 5 < byte_diff, f"move patches {moved} B against a byte diff of {byte_diff} B"


@pytest.mark.parametrize("payload", [
    move_patch_payload([(6, 3, b"abc")]),  # literal beyond the page
    move_patch_payload([(0, 4, 6)]),  # move source beyond the page
    move_patch_payload([(0, 2, b"ab")])[:-1],  # literal shorter than its length
    move_patch_payload([(0, 2, 1)])[:-1],  # truncated move source
    move_patch_payload([]) + b"\1\0",  # truncated op header
    move_patch_payload([]) + (0).to_bytes(2, "little") + (1).to_bytes(2, "little") + b"\7x",  # unknown kind
    move_patch_payload([]) + (0).to_bytes(2, "little") + (0).to_bytes(2, "little") + bytes([LITERAL]),  # empty op
])
def test_malformed_move_patches_are_refused_and_change_nothing(payload: bytes) -> None:
    image = bytearray(b"x" * 8)
    with pytest.raises(MalformedFrame):
        apply_payload(image, RecordFlags.NONE, payload, 8)
    assert image == b"x" * 8


def test_moves_read_the_page_as_it_was() -> None:
    """Overlapping moves: each reads the image before the payload, not a half-moved one."""
    old = bytes(range(16))
    payload = move_patch_payload([(0, 8, 4), (4, 8, 0)])
    image = bytearray(old)
    apply_payload(image, RecordFlags.NONE, payload, 16)
    assert bytes(image) == old[4:8] + old[0:8] + old[12:16]
