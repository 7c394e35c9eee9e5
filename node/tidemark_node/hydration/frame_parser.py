"""The receiving side of a snapshot frame (../snapshot.py): check every entry, keep the
good page versions, set the bad ones aside for a refetch."""

from __future__ import annotations

from collections.abc import Callable

from tidemark_protocol import keys
from tidemark_protocol.layout import VolumeLayout

from .. import snapshot as snap
from .errors import SourceError


def parse_frame(body: bytes, count: int, seg_pg: int, layout: VolumeLayout, base: int,
                put: Callable[[bytes, bytes], None]) -> tuple[int, list[tuple[int, int]]]:
    """Blocking (an executor thread): check one frame body's entries and hand each good
    page version to `put(key, value)`. Returns (good, bad pieces)."""
    unpack = snap.ENTRY.unpack_from
    esize = snap.ENTRY.size
    bad: list[tuple[int, int]] = []
    good = 0
    off = 0
    end = len(body)
    for _ in range(count):
        if off >= end:
            raise SourceError("snapshot: frame shorter than its entry count")
        tag = body[off]
        off += 1
        if tag == 0x50:  # b"P"
            if end - off < esize:
                raise SourceError("snapshot: entry header truncated")
            page, lsn, n = unpack(body, off)
            off += esize
            if end - off < n:
                raise SourceError("snapshot: entry value truncated")
            if layout.pg_of(page) != seg_pg or lsn > base:
                raise SourceError(f"snapshot: page {page}@{lsn} outside pg {seg_pg} / base {base}")
            value = body[off : off + n]
            off += n
            if not keys.version_crc_ok(value):
                bad.append((page, lsn))  # the source's copy is bad: fetch elsewhere
                continue
            put(keys.version_key(seg_pg, page, lsn), value)
            good += 1
        elif tag == 0x42:  # b"B"
            if end - off < snap.BAD.size:
                raise SourceError("snapshot: bad-entry truncated")
            bad.append(snap.BAD.unpack_from(body, off))
            off += snap.BAD.size
        else:
            raise SourceError(f"snapshot: unknown entry tag {tag:#x}")
    if off != end:
        raise SourceError("snapshot: frame longer than its entries")
    return good, bad
