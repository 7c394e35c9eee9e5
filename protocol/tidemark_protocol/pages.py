"""Page images and the redo that changes them.

Three payload kinds, one home (this module) for their formats:
    full image   (FULL_IMAGE flag): the page, zero-padded to the page size
    patch        u32 offset | data                       (one byte range)
    multi patch  u32 0xFFFFFFFF | (u16 offset | u16 len | data)*   (several ranges)
The multi-patch marker can never be a valid single-patch offset, so a reader that
only knows single patches refuses it instead of misapplying it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from .errors import MalformedFrame
from .records import Record, RecordFlags

_PATCH = struct.Struct("<I")
_RANGE = struct.Struct("<HH")
MULTI_MARK = 0xFFFF_FFFF
MAX_MULTI_PAGE = 1 << 16  # u16 offsets and lengths
MERGE_GAP = _RANGE.size  # ranges closer than one range header are cheaper merged
RECORD_OVERHEAD = 52  # record header + CRC + patch offset: what a separate range costs


def patch_payload(offset: int, data: bytes) -> bytes:
    return _PATCH.pack(offset) + data


def multi_patch_payload(ranges: Sequence[tuple[int, bytes]]) -> bytes:
    """One payload carrying several (offset, data) ranges of a page."""
    parts = [_PATCH.pack(MULTI_MARK)]
    for offset, data in ranges:
        if not 0 <= offset < MAX_MULTI_PAGE or len(data) >= MAX_MULTI_PAGE:
            raise ValueError(f"range ({offset}, {len(data)} bytes) does not fit a multi patch")
        parts.append(_RANGE.pack(offset, len(data)))
        parts.append(data)
    return b"".join(parts)


def diff_ranges(old: bytes, new: bytes, gap: int = MERGE_GAP) -> list[tuple[int, bytes]]:
    """The byte ranges of `new` that differ from `old` (same length), neighbours closer
    than `gap` bytes merged."""
    if len(old) != len(new):
        raise ValueError("diff of pages of different sizes")
    ranges: list[tuple[int, int]] = []
    size = len(new)
    i = 0
    # Compare in 64-byte blocks first: most of a page is usually unchanged.
    while i < size:
        j = min(i + 64, size)
        if old[i:j] == new[i:j]:
            i = j
            continue
        while i < j:
            if old[i] != new[i]:
                start = i
                while i < size and old[i] != new[i]:
                    i += 1
                if ranges and start - ranges[-1][1] < gap:
                    ranges[-1] = (ranges[-1][0], i)
                else:
                    ranges.append((start, i))
            else:
                i += 1
    return [(a, new[a:b]) for a, b in ranges]


def page_redo(old: bytes, new: bytes, multi: bool = True) -> list[tuple[bytes, bool]]:
    """Redo payloads (payload, is_full_image) turning `old` into `new`: the smallest of
    a multi patch (or, with multi=False, one single patch per range) and a full image
    (trailing zeros dropped). Empty when the pages are equal."""
    multi = multi and len(new) <= MAX_MULTI_PAGE
    ranges = diff_ranges(old, new, MERGE_GAP if multi else RECORD_OVERHEAD)
    if not ranges:
        return []
    full = new.rstrip(b"\0")
    if multi:
        payload = multi_patch_payload(ranges)
        return [(full, True)] if len(full) <= len(payload) else [(payload, False)]
    patches = [(patch_payload(offset, data), False) for offset, data in ranges]
    if len(full) <= sum(len(p) for p, _ in patches) + RECORD_OVERHEAD * (len(patches) - 1):
        return [(full, True)]
    return patches


def apply_payload(image: bytearray, flags: int, payload: bytes, page_size: int) -> None:
    """Apply one redo payload to a mutable page image (the one decoder of the formats)."""
    if flags & RecordFlags.FULL_IMAGE:
        if len(payload) > page_size:
            raise MalformedFrame(f"full image of {len(payload)} bytes > page {page_size}")
        image[:] = payload.ljust(page_size, b"\0")
        return
    if len(payload) < _PATCH.size:
        raise MalformedFrame("patch payload shorter than its offset")
    (offset,) = _PATCH.unpack_from(payload)
    if offset != MULTI_MARK:
        size = len(payload) - _PATCH.size
        if offset + size > page_size:
            raise MalformedFrame(f"patch [{offset}, {offset + size}) beyond page {page_size}")
        image[offset : offset + size] = payload[_PATCH.size :]
        return
    pos = _PATCH.size
    edits = []
    while pos < len(payload):  # check every range before touching the image
        if pos + _RANGE.size > len(payload):
            raise MalformedFrame("multi patch: truncated range header")
        offset, size = _RANGE.unpack_from(payload, pos)
        pos += _RANGE.size
        if pos + size > len(payload) or offset + size > page_size:
            raise MalformedFrame(f"multi patch: range [{offset}, {offset + size}) out of bounds")
        edits.append((offset, pos, size))
        pos += size
    for offset, start, size in edits:
        image[offset : offset + size] = payload[start : start + size]


def apply_redo(page: bytes, record: Record, page_size: int) -> bytes:
    """Return the page after applying one redo record to it."""
    buf = bytearray(page if page else bytes(page_size))
    apply_payload(buf, record.flags, record.payload, page_size)
    return bytes(buf)


def empty_page(page_size: int) -> bytes:
    return bytes(page_size)


def page_at(records: Iterable[Record], page: int, at: int, page_size: int) -> bytes:
    """A page as of read point `at`, by applying its records in LSN order from empty
    (the reference that materialized versions and page reads must agree with)."""
    image = empty_page(page_size)
    for record in sorted((r for r in records if r.page == page and r.lsn <= at), key=lambda r: r.lsn):
        image = apply_redo(image, record, page_size)
    return image
