"""Page images and the redo that changes them (a patch at an offset, or a full image)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

from .errors import MalformedFrame
from .records import Record, RecordFlags

_PATCH = struct.Struct("<I")


def patch_payload(offset: int, data: bytes) -> bytes:
    return _PATCH.pack(offset) + data


def apply_redo(page: bytes, record: Record, page_size: int) -> bytes:
    """Return the page after applying one redo record to it."""
    if record.flags & RecordFlags.FULL_IMAGE:
        if len(record.payload) > page_size:
            raise MalformedFrame(f"full image of {len(record.payload)} bytes > page {page_size}")
        return record.payload.ljust(page_size, b"\0")
    if len(record.payload) < _PATCH.size:
        raise MalformedFrame("patch payload shorter than its offset")
    (offset,) = _PATCH.unpack_from(record.payload)
    data = record.payload[_PATCH.size :]
    if offset + len(data) > page_size:
        raise MalformedFrame(f"patch [{offset}, {offset + len(data)}) beyond page {page_size}")
    buf = bytearray(page if page else bytes(page_size))
    buf[offset : offset + len(data)] = data
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
