"""Page images and the redo that changes them.

Four payload kinds, one home (this module) for their formats:
    full image   (FULL_IMAGE flag): the page, zero-padded to the page size
    patch        u32 offset | data                       (one byte range)
    multi patch  u32 0xFFFFFFFF | (u16 offset | u16 len | data)*   (several ranges)
    move patch   u32 0xFFFFFFFE | (u16 offset | u16 len | u8 kind | data or u16 src)*
                 kind 0: data follows; kind 1: the bytes at `src` of the page as it
                 was before this payload (a block that moved: SQLite shifts a page's
                 cells by a few bytes when one grows, which is a 3 KB byte diff)
The markers can never be valid single-patch offsets, so a reader that only knows
single patches refuses them instead of misapplying them.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from .errors import MalformedFrame
from .records import Record, RecordFlags

_PATCH = struct.Struct("<I")
_RANGE = struct.Struct("<HH")
_OP = struct.Struct("<HHB")
_SRC = struct.Struct("<H")
MULTI_MARK = 0xFFFF_FFFF
MOVE_MARK = 0xFFFF_FFFE
LITERAL, MOVE = 0, 1
MIN_MOVE = 12  # a move op costs 7 bytes: shorter matches stay literal
ANCHOR = 8  # bytes of `new` looked up in `old` to find where a block came from
MAX_PROBES = 512  # lookups per page: bounds the encoder's time on pages of noise
MOVE_GAP = 64  # differing bytes this close belong to one region (a shifted block)
MIN_SKIP = 6  # an in-place equal run shorter than an op header stays in the literal
MOVE_WORTH = 128  # smaller diffs are new cells, not shifted ones: not worth the search
NEAR = 512  # cells move by a few bytes: look for a block near where it is first
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


def _match_length(old: bytes, src: int, new: bytes, dst: int, end: int) -> int:
    """How many bytes from new[dst:] (up to `end`) equal old[src:]."""
    n = 0
    limit = min(end - dst, len(old) - src)
    step = 64
    while step:  # long strides first: the comparisons run in C
        while n + step <= limit and old[src + n:src + n + step] == new[dst + n:dst + n + step]:
            n += step
        step //= 4
    return n


def _regions(ranges: Sequence[tuple[int, bytes]], gap: int) -> list[tuple[int, int]]:
    """Differing ranges closer than `gap` joined into (start, end) regions."""
    regions: list[tuple[int, int]] = []
    for start, data in ranges:
        end = start + len(data)
        if regions and start - regions[-1][1] < gap:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
    return regions


def move_ops(old: bytes, new: bytes, ranges: Sequence[tuple[int, bytes]]) -> list[tuple[int, int, int | bytes]]:
    """Ops (offset, length, src offset or literal bytes) turning `old` into `new`, given
    their differing `ranges`: in each region of them, runs equal in place are skipped,
    blocks found elsewhere in `old` (shifted cells) become moves, the rest literals."""
    ops: list[tuple[int, int, int | bytes]] = []
    probes = 0
    for start, end in _regions(ranges, MOVE_GAP):
        pos = lit = start
        shift = 0
        while pos < end:
            same = _match_length(old, pos, new, pos, end)
            if same >= MIN_SKIP or pos + same == end:
                if lit < pos:
                    ops.append((lit, pos - lit, new[lit:pos]))
                pos = lit = pos + same
                continue
            best_src, best = -1, 0
            if shift and 0 <= pos + shift < len(old):  # the last block's shift first
                best_src, best = pos + shift, _match_length(old, pos + shift, new, pos, end)
            if best < MIN_MOVE and probes < MAX_PROBES and pos + ANCHOR <= end:
                probes += 1
                anchor = new[pos:pos + ANCHOR]
                lo = max(0, pos - NEAR)
                for src in (old.find(anchor, lo, pos + NEAR + ANCHOR), old.find(anchor)):
                    if src >= 0 and src != pos:
                        n = _match_length(old, src, new, pos, end)
                        if n > best:
                            best_src, best = src, n
            if best >= MIN_MOVE:
                if lit < pos:
                    ops.append((lit, pos - lit, new[lit:pos]))
                ops.append((pos, best, best_src))
                shift = best_src - pos
                pos = lit = pos + best
            else:
                pos += 1
        if lit < end:
            ops.append((lit, end - lit, new[lit:end]))
    return ops


def move_patch_payload(ops: Sequence[tuple[int, int, int | bytes]]) -> bytes:
    parts = [_PATCH.pack(MOVE_MARK)]
    for offset, size, what in ops:
        if not 0 <= offset < MAX_MULTI_PAGE or not 0 < size < MAX_MULTI_PAGE:
            raise ValueError(f"op ({offset}, {size} bytes) does not fit a move patch")
        if isinstance(what, int):
            parts.append(_OP.pack(offset, size, MOVE) + _SRC.pack(what))
        else:
            parts.append(_OP.pack(offset, size, LITERAL) + what)
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
        if len(payload) > MOVE_WORTH:
            moved = move_patch_payload(move_ops(old, new, ranges))
            if len(moved) < len(payload):
                payload = moved
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
    if offset == MOVE_MARK:
        _apply_moves(image, payload, page_size)
        return
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


def _apply_moves(image: bytearray, payload: bytes, page_size: int) -> None:
    """Every op checked before the image changes; moves read the image as it was."""
    pos = _PATCH.size
    edits: list[tuple[int, int, int, bool]] = []  # (offset, size, where, from payload)
    while pos < len(payload):
        if pos + _OP.size > len(payload):
            raise MalformedFrame("move patch: truncated op header")
        offset, size, kind = _OP.unpack_from(payload, pos)
        pos += _OP.size
        if size == 0 or offset + size > page_size:
            raise MalformedFrame(f"move patch: op [{offset}, {offset + size}) out of bounds")
        if kind == LITERAL:
            if pos + size > len(payload):
                raise MalformedFrame("move patch: literal beyond the payload")
            edits.append((offset, size, pos, True))
            pos += size
        elif kind == MOVE:
            if pos + _SRC.size > len(payload):
                raise MalformedFrame("move patch: truncated move source")
            (src,) = _SRC.unpack_from(payload, pos)
            pos += _SRC.size
            if src + size > page_size:
                raise MalformedFrame(f"move patch: source [{src}, {src + size}) out of bounds")
            edits.append((offset, size, src, False))
        else:
            raise MalformedFrame(f"move patch: unknown op kind {kind}")
    before = bytes(image)
    for offset, size, where, literal in edits:
        image[offset:offset + size] = (payload if literal else before)[where:where + size]


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
