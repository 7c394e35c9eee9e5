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

from .errors import ImplausibleClaim, MalformedFrame
from .records import EncodedRecord, Record, crc32c, decode_encoded, decode_record

MAGIC = b"TMB1"
_HEAD = struct.Struct("<4sQQQQI")
_GROUP = struct.Struct("<IQI")
_COUNT = struct.Struct("<I")
_MARK = struct.Struct("<QQ")
_CRC = struct.Struct("<I")
MAX_FRAME = 64 << 20


@dataclass(slots=True)
class FrameGroup:
    pg: int
    membership_epoch: int
    records: list[EncodedRecord]


@dataclass(slots=True)
class Frame:
    """A decoded write batch: its records keep their encoded bytes (the node stores them
    as received, without encoding them again)."""

    seq: int
    volume_epoch: int
    writer_vdl: int  # lets nodes know what is durable (materialize, backup, recovery hint)
    pgmrpl: int  # lowest read point in use: below it versions may be coalesced
    groups: list[FrameGroup]
    vdl_marks: list[tuple[int, int]] = field(default_factory=list)  # (vdl, unix time µs)


def encode_batch_with_encoded_records(
    seq: int,
    volume_epoch: int,
    writer_vdl: int,
    pgmrpl: int,
    groups: list[tuple[int, int, list[bytes]]],
    vdl_marks: list[tuple[int, int]] | tuple = (),
) -> bytes:
    """A write batch frame from records already encoded once (the writer sends each
    record to six segments; encoding it six times would be wasted work).
    `groups`: (pg, membership_epoch, encoded records)."""
    parts = [_HEAD.pack(MAGIC, seq, volume_epoch, writer_vdl, pgmrpl, len(groups))]
    for pg, epoch, encoded in groups:
        parts.append(_GROUP.pack(pg, epoch, len(encoded)))
        parts.extend(encoded)
    parts.append(encode_marks(vdl_marks))
    body = b"".join(parts)
    return body + _CRC.pack(crc32c(body))


def decode_frame(buf: bytes) -> Frame:
    """Check a frame (size, CRC32C, magic, group headers, every record as
    `records.decode_record` does, records in their group's PG, the marks section)."""
    if len(buf) > MAX_FRAME:
        raise MalformedFrame(f"frame of {len(buf)} bytes exceeds {MAX_FRAME}")
    if len(buf) < _HEAD.size + _CRC.size:
        raise MalformedFrame("frame shorter than its header")
    end_body = len(buf) - _CRC.size
    (stored_crc,) = _CRC.unpack_from(buf, end_body)
    body = buf[:end_body]  # one copy per frame (the CRC codec wants read-only bytes)
    if crc32c(body) != stored_crc:
        raise MalformedFrame("frame crc32c mismatch")
    magic, seq, epoch, vdl, pgmrpl, ngroups = _HEAD.unpack_from(body, 0)
    if magic != MAGIC:
        raise MalformedFrame(f"bad frame magic {magic!r}")
    offset = _HEAD.size
    groups: list[FrameGroup] = []
    for _ in range(ngroups):
        if end_body - offset < _GROUP.size:
            raise MalformedFrame("frame truncated in a group header")
        pg, mepoch, count = _GROUP.unpack_from(body, offset)
        offset += _GROUP.size
        records, offset = decode_encoded(body, offset, end_body, count, pg)
        groups.append(FrameGroup(pg, mepoch, records))
    marks = decode_marks(body, offset, end_body)
    return Frame(seq, epoch, vdl, pgmrpl, groups, marks)


def check_claims(frame: Frame) -> None:
    """Refuse a frame whose own watermarks contradict each other (ImplausibleClaim): a
    writer reads its VDL, PGMRPL and marks together, PGMRPL is the lowest read point in
    use or the VDL, and every mark is a VDL already reached, so neither may exceed the
    frame's VDL. Per-segment claims are `SegmentLog.check_claims`."""
    if frame.pgmrpl > frame.writer_vdl:
        raise ImplausibleClaim(f"pgmrpl {frame.pgmrpl} above the frame's VDL {frame.writer_vdl}")
    for vdl, _time in frame.vdl_marks:
        if vdl > frame.writer_vdl:
            raise ImplausibleClaim(f"VDL mark {vdl} above the frame's VDL {frame.writer_vdl}")


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


def decode_records(buf: bytes) -> list[Record]:
    """A plain concatenation of records (gossip and hydration answers), decoded."""
    out: list[Record] = []
    offset = 0
    while offset < len(buf):
        record, offset = decode_record(buf, offset)
        out.append(record)
    return out
