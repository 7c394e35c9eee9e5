"""Redo record codec: a fixed little-endian header, the payload, and a CRC32C of both.

Format version 1:
    u8 version | u8 flags | u16 reserved | u32 pg | u64 lsn | u64 page
    | u64 prev_lsn_in_pg | u64 prev_lsn_of_page | u32 payload_len | payload | u32 crc32c
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntFlag
from typing import NamedTuple

import google_crc32c

from .errors import CorruptRecord, MalformedFrame

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BBHIQQQQI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
CRC_SIZE = _CRC.size
MAX_PAYLOAD = 1 << 20


class RecordFlags(IntFlag):
    NONE = 0
    CPL = 1  # last record of a mini-transaction: a consistency point
    FULL_IMAGE = 2  # payload is a whole page image rather than a patch


_KNOWN_FLAGS = int(RecordFlags.CPL | RecordFlags.FULL_IMAGE)


def crc32c(data: bytes) -> int:
    return google_crc32c.value(data)


@dataclass(frozen=True, slots=True)
class Record:
    lsn: int
    pg: int
    page: int
    prev_lsn_in_pg: int
    prev_lsn_of_page: int
    flags: RecordFlags
    payload: bytes

    @property
    def is_cpl(self) -> bool:
        return bool(self.flags & RecordFlags.CPL)

    def encode(self) -> bytes:
        body = (
            _HEADER.pack(
                FORMAT_VERSION,
                int(self.flags),
                0,
                self.pg,
                self.lsn,
                self.page,
                self.prev_lsn_in_pg,
                self.prev_lsn_of_page,
                len(self.payload),
            )
            + self.payload
        )
        return body + _CRC.pack(crc32c(body))


def encoded_size(payload_len: int) -> int:
    return HEADER_SIZE + payload_len + _CRC.size


def decode_record(buf: bytes | memoryview, offset: int = 0) -> tuple[Record, int]:
    """Decode one record at `offset`; returns it and the offset just past it."""
    view = memoryview(buf)
    if len(view) - offset < HEADER_SIZE + _CRC.size:
        raise MalformedFrame("record truncated: shorter than its header")
    version, flags, _reserved, pg, lsn, page, prev_pg, prev_page, plen = _HEADER.unpack_from(
        view, offset
    )
    if version != FORMAT_VERSION:
        raise MalformedFrame(f"unsupported record format version {version}")
    if plen > MAX_PAYLOAD:
        raise MalformedFrame(f"record payload length {plen} exceeds {MAX_PAYLOAD}")
    end = offset + HEADER_SIZE + plen
    if len(view) < end + _CRC.size:
        raise MalformedFrame("record truncated: payload or crc missing")
    (stored_crc,) = _CRC.unpack_from(view, end)
    body = bytes(view[offset:end])
    if crc32c(body) != stored_crc:
        raise CorruptRecord(f"record lsn={lsn} pg={pg}: crc32c mismatch")
    if lsn == 0 or prev_pg >= lsn or prev_page >= lsn:
        raise MalformedFrame(f"record lsn={lsn}: back-links must point below its lsn")
    # RecordFlags is an IntFlag, which keeps unknown bits instead of raising: check them.
    if flags & ~_KNOWN_FLAGS:
        raise MalformedFrame(f"record lsn={lsn}: unknown flags {flags:#x}")
    rflags = RecordFlags(flags)
    record = Record(lsn, pg, page, prev_pg, prev_page, rflags, body[HEADER_SIZE:])
    return record, end + _CRC.size


def decode_one(buf: bytes) -> Record:
    record, end = decode_record(buf)
    if end != len(buf):
        raise MalformedFrame("trailing bytes after record")
    return record


# -- records kept in their encoded form (the node stores them as received) ---------------
class RecordHeader(NamedTuple):
    """The fixed header of an encoded record, read without checking its CRC."""

    version: int
    flags: int
    pg: int
    lsn: int
    page: int
    prev_lsn_in_pg: int
    prev_lsn_of_page: int
    payload_len: int

    @property
    def encoded_size(self) -> int:
        return HEADER_SIZE + self.payload_len + CRC_SIZE


def peek_header(buf: bytes | memoryview, offset: int = 0) -> RecordHeader:
    """The header of the encoded record at `offset`, without decoding or checking the
    payload (startup scans, GC, index keys). Raises MalformedFrame if `buf` is shorter
    than a header."""
    if len(buf) - offset < HEADER_SIZE:
        raise MalformedFrame("record truncated: shorter than its header")
    version, flags, _reserved, pg, lsn, page, prev_pg, prev_page, plen = _HEADER.unpack_from(
        buf, offset
    )
    return RecordHeader(version, flags, pg, lsn, page, prev_pg, prev_page, plen)


class EncodedRecord:
    """A record still in its encoded bytes (`raw`, CRC included) plus the header fields
    SegmentLog and the node's key layout need.

    A plain slotted class rather than `Record`: decoding is the node's hot loop (one
    object per record at ~100k records/s per node), and the bytes are stored as received
    instead of being encoded again."""

    __slots__ = ("lsn", "pg", "page", "prev_lsn_in_pg", "flags", "raw")

    def __init__(self, lsn: int, pg: int, page: int, prev: int, flags: int, raw: bytes) -> None:
        self.lsn = lsn
        self.pg = pg
        self.page = page
        self.prev_lsn_in_pg = prev
        self.flags = flags
        self.raw = raw

    @property
    def payload(self) -> bytes:
        return self.raw[HEADER_SIZE:-CRC_SIZE]


def decode_encoded(
    buf: bytes,
    offset: int = 0,
    end: int | None = None,
    count: int | None = None,
    pg: int | None = None,
) -> tuple[list[EncodedRecord], int]:
    """Check records in buf[offset:end] with exactly the checks of `decode_record`
    (version, length, CRC32C, back-links, flags) and keep each one's encoded bytes.
    Reads `count` records (or up to `end` when None), each of PG `pg` when given;
    returns them and the offset just past the last one."""
    end = len(buf) if end is None else end
    out: list[EncodedRecord] = []
    unpack = _HEADER.unpack_from
    hsize = HEADER_SIZE
    csize = CRC_SIZE
    n = 0
    while (n < count) if count is not None else (offset < end):
        if end - offset < hsize + csize:
            raise MalformedFrame("record truncated: shorter than its header")
        version, flags, _r, rpg, lsn, page, prev, prev_page, plen = unpack(buf, offset)
        if version != FORMAT_VERSION:
            raise MalformedFrame(f"unsupported record format version {version}")
        if plen > MAX_PAYLOAD:
            raise MalformedFrame(f"record payload length {plen} exceeds {MAX_PAYLOAD}")
        stop = offset + hsize + plen + csize
        if stop > end:
            raise MalformedFrame("record truncated: payload or crc missing")
        raw = buf[offset:stop]
        if crc32c(raw[:-csize]) != int.from_bytes(raw[-csize:], "little"):
            raise CorruptRecord(f"record lsn={lsn} pg={rpg}: crc32c mismatch")
        if lsn == 0 or prev >= lsn or prev_page >= lsn:
            raise MalformedFrame(f"record lsn={lsn}: back-links must point below its lsn")
        if flags & ~_KNOWN_FLAGS:
            raise MalformedFrame(f"record lsn={lsn}: unknown flags {flags:#x}")
        if pg is not None and rpg != pg:
            raise MalformedFrame(f"record lsn={lsn} of pg {rpg} in group {pg}")
        out.append(EncodedRecord(lsn, rpg, page, prev, flags, raw))
        offset = stop
        n += 1
    return out, offset


def split_records(buf: bytes) -> list[EncodedRecord]:
    """A concatenation of records (gossip, hydration and repair answers), fully checked."""
    return decode_encoded(buf)[0]


def iter_encoded(buf: bytes | memoryview) -> Iterator[EncodedRecord]:
    """Cut a concatenation of records that was already checked (by the node when it read
    them, or by an enclosing CRC) at the headers' payload lengths: framing checks only
    (version, length), no per-record CRC. `raw` slices `buf` (no copy of a memoryview)."""
    offset, end = 0, len(buf)
    while offset < end:
        h = peek_header(buf, offset)
        if h.version != FORMAT_VERSION:
            raise MalformedFrame(f"unsupported record format version {h.version}")
        stop = offset + h.encoded_size
        if stop > end:
            raise MalformedFrame("record truncated: payload or crc missing")
        yield EncodedRecord(h.lsn, h.pg, h.page, h.prev_lsn_in_pg, h.flags, buf[offset:stop])
        offset = stop
