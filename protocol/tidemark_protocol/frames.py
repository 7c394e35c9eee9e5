"""Binary frames carried on the writer→node log stream.

A write batch boxcars records for every PG a node hosts into one frame, so a node
sees one durable sync per batch, not per record. Frame layout (version 1):

    b"TMB1" | u64 seq | u64 volume_epoch | u64 writer_vdl | u64 pgmrpl | u32 groups
    then per group: u32 pg | u64 membership_epoch | u32 count | records...
    then, optionally, the VDL marks: u32 count | (u64 vdl, u64 unix_time_us)...
    then u32 crc32c over everything before it.

VDL marks are the writer's VDL transitions with the wall-clock time each happened: a
commit is acknowledged the moment VDL passes it, so "everything acknowledged by time T"
is exactly the last mark at or before T. Backups keep them for point-in-time restore.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from .errors import MalformedFrame
from .records import Record, crc32c, decode_record

MAGIC = b"TMB1"
_HEAD = struct.Struct("<4sQQQQI")
_GROUP = struct.Struct("<IQI")
_COUNT = struct.Struct("<I")
_MARK = struct.Struct("<QQ")
_CRC = struct.Struct("<I")
MAX_FRAME = 64 << 20


@dataclass(slots=True)
class PgBatch:
    pg: int
    membership_epoch: int
    records: list[Record] = field(default_factory=list)


@dataclass(slots=True)
class WriteBatch:
    seq: int
    volume_epoch: int
    writer_vdl: int  # lets nodes know what is durable (materialize, backup, recovery hint)
    pgmrpl: int  # lowest read point in use: below it versions may be coalesced
    groups: list[PgBatch]
    vdl_marks: list[tuple[int, int]] = field(default_factory=list)  # (vdl, unix time µs)

    def encode(self) -> bytes:
        parts = [
            _HEAD.pack(
                MAGIC, self.seq, self.volume_epoch, self.writer_vdl, self.pgmrpl, len(self.groups)
            )
        ]
        for group in self.groups:
            parts.append(_GROUP.pack(group.pg, group.membership_epoch, len(group.records)))
            parts.extend(r.encode() for r in group.records)
        parts.append(encode_marks(self.vdl_marks))
        body = b"".join(parts)
        return body + _CRC.pack(crc32c(body))


def encode_batch_with_encoded_records(
    seq: int,
    volume_epoch: int,
    writer_vdl: int,
    pgmrpl: int,
    groups: list[tuple[int, int, list[bytes]]],
    vdl_marks: list[tuple[int, int]] | tuple = (),
) -> bytes:
    """Like WriteBatch.encode, but from records already encoded once (the writer sends
    each record to six segments; encoding it six times would be wasted work)."""
    parts = [_HEAD.pack(MAGIC, seq, volume_epoch, writer_vdl, pgmrpl, len(groups))]
    for pg, epoch, encoded in groups:
        parts.append(_GROUP.pack(pg, epoch, len(encoded)))
        parts.extend(encoded)
    parts.append(encode_marks(vdl_marks))
    body = b"".join(parts)
    return body + _CRC.pack(crc32c(body))


def decode_batch(buf: bytes) -> WriteBatch:
    if len(buf) > MAX_FRAME:
        raise MalformedFrame(f"frame of {len(buf)} bytes exceeds {MAX_FRAME}")
    if len(buf) < _HEAD.size + _CRC.size:
        raise MalformedFrame("frame shorter than its header")
    (stored_crc,) = _CRC.unpack_from(buf, len(buf) - _CRC.size)
    body = memoryview(buf)[: len(buf) - _CRC.size]
    if crc32c(bytes(body)) != stored_crc:
        raise MalformedFrame("frame crc32c mismatch")
    magic, seq, epoch, vdl, pgmrpl, ngroups = _HEAD.unpack_from(body, 0)
    if magic != MAGIC:
        raise MalformedFrame(f"bad frame magic {magic!r}")
    offset = _HEAD.size
    groups: list[PgBatch] = []
    for _ in range(ngroups):
        if len(body) - offset < _GROUP.size:
            raise MalformedFrame("frame truncated in a group header")
        pg, mepoch, count = _GROUP.unpack_from(body, offset)
        offset += _GROUP.size
        group = PgBatch(pg, mepoch)
        for _ in range(count):
            record, offset = decode_record(body, offset)
            if record.pg != pg:
                raise MalformedFrame(f"record lsn={record.lsn} of pg {record.pg} in group {pg}")
            group.records.append(record)
        groups.append(group)
    marks = decode_marks(body, offset, len(body))
    return WriteBatch(seq, epoch, vdl, pgmrpl, groups, marks)


def encode_marks(marks: list[tuple[int, int]] | tuple) -> bytes:
    if not marks:
        return b""
    return _COUNT.pack(len(marks)) + b"".join(_MARK.pack(v, t) for v, t in marks)


def decode_marks(body: bytes | memoryview, offset: int, end: int) -> list[tuple[int, int]]:
    """The optional VDL-marks section that ends a frame body (empty if absent)."""
    if offset == end:
        return []
    if end - offset >= _COUNT.size:
        (count,) = _COUNT.unpack_from(body, offset)
        if end - offset == _COUNT.size + count * _MARK.size:
            start = offset + _COUNT.size
            return [_MARK.unpack_from(body, start + i * _MARK.size) for i in range(count)]
    raise MalformedFrame("trailing bytes after the last group")


def encode_records(records: list[Record]) -> bytes:
    """A plain concatenation of records (gossip and hydration responses)."""
    return b"".join(r.encode() for r in records)


def decode_records(buf: bytes) -> list[Record]:
    out: list[Record] = []
    offset = 0
    while offset < len(buf):
        record, offset = decode_record(buf, offset)
        out.append(record)
    return out
