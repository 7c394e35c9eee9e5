"""Record codec and batch frames: round trips, corruption detection, malformed input."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark_protocol.errors import CorruptRecord, MalformedFrame
from tidemark_protocol.frames import (
    MAGIC,
    Frame,
    decode_frame,
    decode_records,
    encode_batch_with_encoded_records,
)
from tidemark_protocol.records import (
    HEADER_SIZE,
    MAX_PAYLOAD,
    Record,
    RecordFlags,
    crc32c,
    decode_one,
    decode_record,
    encoded_size,
    iter_encoded,
    peek_header,
    split_records,
)

pytestmark = pytest.mark.unit

U32 = st.integers(0, 2**32 - 1)
U64 = st.integers(0, 2**64 - 1)


@st.composite
def records(draw, pg: int | None = None) -> Record:
    lsn = draw(st.integers(1, 2**64 - 1))
    return Record(
        lsn=lsn,
        pg=draw(U32) if pg is None else pg,
        page=draw(U64),
        prev_lsn_in_pg=draw(st.integers(0, lsn - 1)),
        prev_lsn_of_page=draw(st.integers(0, lsn - 1)),
        flags=draw(st.sampled_from(list(RecordFlags) + [RecordFlags.CPL | RecordFlags.FULL_IMAGE])),
        payload=draw(st.binary(max_size=64)),
    )


# A test-side model of a write batch, encoded field by field from the layout in
# frames.py's docstring (production only encodes from pre-encoded records).
@dataclass
class PgBatch:
    pg: int
    membership_epoch: int
    records: list[Record] = field(default_factory=list)


@dataclass
class WriteBatch:
    seq: int
    volume_epoch: int
    writer_vdl: int
    pgmrpl: int
    groups: list[PgBatch]
    vdl_marks: list[tuple[int, int]] = field(default_factory=list)

    def encode(self) -> bytes:
        parts = [struct.pack("<4sQQQQI", MAGIC, self.seq, self.volume_epoch, self.writer_vdl,
                             self.pgmrpl, len(self.groups))]
        for g in self.groups:
            parts.append(struct.pack("<IQI", g.pg, g.membership_epoch, len(g.records)))
            parts.extend(r.encode() for r in g.records)
        if self.vdl_marks:
            parts.append(struct.pack("<I", len(self.vdl_marks)))
            parts.extend(struct.pack("<QQ", v, t) for v, t in self.vdl_marks)
        body = b"".join(parts)
        return body + struct.pack("<I", crc32c(body))


def decode_batch(buf: bytes) -> WriteBatch:
    """decode_frame, with its records decoded (to compare with the model)."""
    frame: Frame = decode_frame(buf)
    groups = [PgBatch(g.pg, g.membership_epoch, [decode_one(r.raw) for r in g.records])
              for g in frame.groups]
    return WriteBatch(frame.seq, frame.volume_epoch, frame.writer_vdl, frame.pgmrpl, groups,
                      list(frame.vdl_marks))


@st.composite
def batches(draw) -> WriteBatch:
    pgs = draw(st.lists(U32, max_size=4, unique=True))
    groups = [PgBatch(pg, draw(U64), draw(st.lists(records(pg=pg), max_size=4))) for pg in pgs]
    return WriteBatch(draw(U64), draw(U64), draw(U64), draw(U64), groups)


def _rec(lsn=5, payload=b"hello", flags=RecordFlags.CPL) -> Record:
    return Record(lsn, 2, 9, lsn - 1, 0, flags, payload)


# -- records ------------------------------------------------------------------------------
@given(records())
def test_record_round_trip(record: Record) -> None:
    buf = record.encode()
    assert len(buf) == encoded_size(len(record.payload))
    assert decode_one(buf) == record
    decoded, end = decode_record(b"junk" + buf + b"more", 4)
    assert decoded == record and end == 4 + len(buf)


def test_record_header_layout_and_crc() -> None:
    r = _rec()
    buf = r.encode()
    assert buf[0] == 1  # format version
    assert buf[1] == int(RecordFlags.CPL)
    assert struct.unpack_from("<I", buf, len(buf) - 4)[0] == crc32c(buf[:-4])
    assert len(buf) == HEADER_SIZE + len(r.payload) + 4
    assert r.is_cpl and not _rec(flags=RecordFlags.NONE).is_cpl


@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(records(), st.data())
def test_every_single_byte_corruption_is_detected(record: Record, data) -> None:
    buf = record.encode()
    for i in range(len(buf)):
        delta = data.draw(st.integers(1, 255), label=f"xor@{i}")
        bad = bytearray(buf)
        bad[i] ^= delta
        with pytest.raises(MalformedFrame):
            decode_one(bytes(bad))


def test_payload_corruption_is_a_corrupt_record() -> None:
    buf = bytearray(_rec().encode())
    buf[HEADER_SIZE] ^= 0xFF
    with pytest.raises(CorruptRecord):
        decode_one(bytes(buf))


@given(records(), st.data())
def test_truncated_record_is_malformed(record: Record, data) -> None:
    buf = record.encode()
    cut = data.draw(st.integers(0, len(buf) - 1))
    with pytest.raises(MalformedFrame):
        decode_one(buf[:cut])


@given(st.binary(max_size=200))
def test_garbage_never_raises_anything_but_malformed(garbage: bytes) -> None:
    for decode in (decode_one, decode_records, decode_batch, split_records):
        try:
            decode(garbage)
        except MalformedFrame:
            pass


@given(st.binary(min_size=HEADER_SIZE, max_size=120))
def test_garbage_with_valid_crc_never_raises_anything_but_malformed(body: bytes) -> None:
    """A CRC is no defence against a buggy sender: the checks behind it must hold too."""
    body = b"\x01" + body[1:]  # right version byte so the parser gets further
    buf = body + struct.pack("<I", crc32c(body))
    try:
        r = decode_one(buf)
    except MalformedFrame:
        return
    assert r.prev_lsn_in_pg < r.lsn and r.prev_lsn_of_page < r.lsn
    assert int(r.flags) & ~int(RecordFlags.CPL | RecordFlags.FULL_IMAGE) == 0


def test_trailing_bytes_after_record() -> None:
    with pytest.raises(MalformedFrame, match="trailing"):
        decode_one(_rec().encode() + b"\0")


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", crc32c(body))


def _header(version=1, flags=1, pg=2, lsn=5, page=9, prev=4, prev_page=0, plen=0) -> bytes:
    return struct.pack("<BBHIQQQQI", version, flags, 0, pg, lsn, page, prev, prev_page, plen)


@pytest.mark.parametrize(
    "header, match",
    [
        (_header(version=2), "version"),
        (_header(lsn=0, prev=0), "back-links"),
        (_header(lsn=5, prev=5), "back-links"),
        (_header(lsn=5, prev_page=7), "back-links"),
        (_header(flags=0x80), "flags"),
        (_header(flags=0x04), "flags"),
    ],
    ids=["version", "lsn0", "prev-not-below", "page-prev-not-below", "flag-0x80", "flag-0x04"],
)
def test_semantically_bad_record_with_good_crc(header: bytes, match: str) -> None:
    with pytest.raises(MalformedFrame, match=match):
        decode_one(_with_crc(header))


def test_oversized_payload_length_rejected_before_reading() -> None:
    with pytest.raises(MalformedFrame, match="exceeds"):
        decode_one(_header(plen=MAX_PAYLOAD + 1) + b"\0" * 8)


@given(st.lists(records(), max_size=6))
def test_records_concatenation_round_trip(rs: list[Record]) -> None:
    buf = b"".join(r.encode() for r in rs)
    assert decode_records(buf) == rs
    for encoded in (split_records(buf), list(iter_encoded(buf)), list(iter_encoded(memoryview(buf)))):
        assert [bytes(e.raw) for e in encoded] == [r.encode() for r in rs]
        assert [(e.lsn, e.pg, e.page, e.prev_lsn_in_pg, e.flags, bytes(e.payload)) for e in encoded] == [
            (r.lsn, r.pg, r.page, r.prev_lsn_in_pg, int(r.flags), r.payload) for r in rs]


@given(records())
def test_header_peek_reads_the_header_only(record: Record) -> None:
    buf = b"xx" + record.encode()
    h = peek_header(buf, 2)
    assert (h.version, h.flags, h.pg, h.lsn, h.page, h.prev_lsn_in_pg, h.prev_lsn_of_page) == (
        1, int(record.flags), record.pg, record.lsn, record.page, record.prev_lsn_in_pg,
        record.prev_lsn_of_page)
    assert h.payload_len == len(record.payload) and h.encoded_size == len(buf) - 2
    bad = bytearray(buf)
    bad[-1] ^= 1  # the CRC is not checked by a peek...
    assert peek_header(bytes(bad), 2) == h
    with pytest.raises(CorruptRecord):  # ...but by split_records
        split_records(bytes(bad[2:]))
    with pytest.raises(MalformedFrame, match="shorter"):
        peek_header(buf[: 2 + HEADER_SIZE - 1], 2)


def test_iter_encoded_checks_framing() -> None:
    raw = _rec().encode()
    with pytest.raises(MalformedFrame, match="truncated"):
        list(iter_encoded(raw + raw[:-1]))
    with pytest.raises(MalformedFrame, match="version"):
        list(iter_encoded(b"\x02" + raw[1:]))


# -- frames -------------------------------------------------------------------------------
@given(batches())
def test_batch_round_trip(batch: WriteBatch) -> None:
    assert decode_batch(batch.encode()) == batch


@given(batches())
def test_batch_from_pre_encoded_records_is_identical(batch: WriteBatch) -> None:
    groups = [(g.pg, g.membership_epoch, [r.encode() for r in g.records]) for g in batch.groups]
    raw = encode_batch_with_encoded_records(
        batch.seq, batch.volume_epoch, batch.writer_vdl, batch.pgmrpl, groups
    )
    assert raw == batch.encode()


@settings(max_examples=40)
@given(batches(), st.data())
def test_every_single_byte_corruption_of_a_frame_is_detected(batch: WriteBatch, data) -> None:
    buf = batch.encode()
    for i in range(len(buf)):
        bad = bytearray(buf)
        bad[i] ^= data.draw(st.integers(1, 255), label=f"xor@{i}")
        with pytest.raises(MalformedFrame):
            decode_batch(bytes(bad))


@given(batches(), st.data())
def test_truncated_frame_is_malformed(batch: WriteBatch, data) -> None:
    buf = batch.encode()
    cut = data.draw(st.integers(0, len(buf) - 1))
    with pytest.raises(MalformedFrame):
        decode_batch(buf[:cut])


@given(st.binary(max_size=300))
def test_garbage_frame_body_with_valid_crc_is_malformed_or_decodes(body: bytes) -> None:
    for prefix in (b"", MAGIC):
        buf = _with_crc(prefix + body)
        try:
            decode_batch(buf)
        except MalformedFrame:
            pass


def _frame_body(groups: bytes, ngroups: int, magic=MAGIC) -> bytes:
    return struct.pack("<4sQQQQI", magic, 1, 1, 0, 0, ngroups) + groups


def test_frame_structural_errors() -> None:
    rec = _rec().encode()  # a record of pg 2
    cases = [
        (_frame_body(b"", 0, magic=b"XXXX"), "magic"),
        (_frame_body(b"", 1), "group header"),
        (_frame_body(struct.pack("<IQI", 3, 1, 1) + rec, 1), "of pg 2 in group 3"),
        (_frame_body(struct.pack("<IQI", 2, 1, 1) + rec + b"x", 1), "trailing"),
        (_frame_body(struct.pack("<IQI", 2, 1, 2) + rec, 1), "truncated"),
    ]
    for body, match in cases:
        with pytest.raises(MalformedFrame, match=match):
            decode_batch(_with_crc(body))
    with pytest.raises(MalformedFrame, match="crc"):
        decode_batch(_frame_body(b"", 0) + b"\0\0\0\0")
    with pytest.raises(MalformedFrame, match="shorter"):
        decode_batch(b"TMB1")


@given(batches(), st.lists(st.tuples(U64, U64), max_size=20))
def test_batch_with_vdl_marks_round_trips(batch: WriteBatch, marks) -> None:
    batch.vdl_marks = list(marks)
    raw = batch.encode()
    assert decode_batch(raw) == batch
    groups = [(g.pg, g.membership_epoch, [r.encode() for r in g.records]) for g in batch.groups]
    assert raw == encode_batch_with_encoded_records(
        batch.seq, batch.volume_epoch, batch.writer_vdl, batch.pgmrpl, groups, batch.vdl_marks
    )
