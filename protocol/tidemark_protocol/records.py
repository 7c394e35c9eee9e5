"""Redo record codec: a fixed little-endian header, the payload, and a CRC32C of both.

Format version 1:
    u8 version | u8 flags | u16 reserved | u32 pg | u64 lsn | u64 page
    | u64 prev_lsn_in_pg | u64 prev_lsn_of_page | u32 payload_len | payload | u32 crc32c
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag

import google_crc32c

from .errors import CorruptRecord, MalformedFrame

FORMAT_VERSION = 1
_HEADER = struct.Struct("<BBHIQQQQI")
_CRC = struct.Struct("<I")
HEADER_SIZE = _HEADER.size
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
