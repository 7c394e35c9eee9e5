"""A structure-aware fuzzer over the node's WriteBatch decoder and the protocol entry
points intake drives (frames.decode_frame, frames.check_claims, SegmentLog.check_write,
accept, note_vdl). Frames start as ones a writer would send to segments in a known
state; hypothesis then mutates header fields, group headers, record fields and bytes
with every CRC recomputed, so mutations reach the parser and the protocol.

Checked for every case: decoding raises nothing but a ProtocolError; a refused frame or
group changes nothing; whatever is accepted leaves the segment consistent (hint within
the chain, epochs untouched, a rebuild from what was stored gives the same state).
10,000 cases in about 15 s (2 cores, under load) (`FUZZ_CASES`).
"""

from __future__ import annotations

import copy
import struct
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark_protocol.errors import ProtocolError
from tidemark_protocol.frames import check_claims, decode_frame, encode_batch_with_encoded_records
from tidemark_protocol.records import Record, RecordFlags, crc32c
from tidemark_protocol.segment import SegmentLog, SegmentMeta

pytestmark = [pytest.mark.unit, pytest.mark.security]

FUZZ_CASES = 10_000
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
PGS = (0, 1, 2)
VOLUME_EPOCH, MEMBERSHIP_EPOCH = 3, 2
TRUNCATION = (120, 1400)  # the last recovery: VDL 120, the writer's LSNs start at 1401


def fleet_segment(pg: int) -> tuple[SegmentLog, dict[int, Record]]:
    """A segment at the writer's epoch holding its PG's records of 1..120 and 1401..1440."""
    meta = SegmentMeta(pg, VOLUME_EPOCH, MEMBERSHIP_EPOCH, truncations=[TRUNCATION])
    log = SegmentLog(meta)
    records, prev = [], 0
    for lsn in [x for x in range(1, 121) if x % 3 == pg] + [x for x in range(1401, 1441) if x % 3 == pg]:
        records.append(Record(lsn, pg, lsn % 8, prev, 0, RecordFlags.CPL, b"\0\0\0\0x"))
        prev = lsn
    stored = {r.lsn: r for r in log.accept(records)}
    log.note_vdl(1430)
    return log, stored


@dataclass
class Seed:
    seq: int
    volume_epoch: int
    vdl: int
    pgmrpl: int
    groups: list[tuple[int, int, list[Record]]]
    marks: list[tuple[int, int]]


def writer_frame(segments: dict[int, SegmentLog], per_pg: int) -> Seed:
    """What the writer sends next: new records continuing each PG's chain."""
    groups, lsn = [], 1441
    for pg in PGS:
        prev, records = segments[pg].scl, []
        while len(records) < per_pg:
            if lsn % 3 == pg:
                records.append(Record(lsn, pg, lsn % 8, prev, 0, RecordFlags.CPL, b"\0\0\0\0y"))
                prev = lsn
            lsn += 1
        groups.append((pg, MEMBERSHIP_EPOCH, records))
    return Seed(7, VOLUME_EPOCH, 1440, 1430, groups, [(1435, 1), (1440, 2)])


def interesting(bits: int) -> st.SearchStrategy[int]:
    top = (1 << bits) - 1
    return st.one_of(st.sampled_from([0, 1, 2, top, top - 1, 1 << (bits - 1), 120, 121, 1400, 1401,
                                      1440, 1441, 1440 + 10_000_000, 1441 + 10_000_000]),
                     st.integers(0, top))


HEADER_FIELDS = {"seq": 64, "volume_epoch": 64, "vdl": 64, "pgmrpl": 64}
GROUP_FIELDS = {"pg": 32, "membership_epoch": 64}
RECORD_FIELDS = {"lsn": 64, "prev_lsn_in_pg": 64, "prev_lsn_of_page": 64, "page": 64, "pg": 32}

mutation = st.one_of(
    st.tuples(st.just("header"), st.sampled_from(sorted(HEADER_FIELDS)), interesting(64)),
    st.tuples(st.just("group"), st.sampled_from(sorted(GROUP_FIELDS)), interesting(64), st.integers(0, 9)),
    st.tuples(st.just("record"), st.sampled_from(sorted(RECORD_FIELDS)), interesting(64),
              st.integers(0, 9), st.integers(0, 99)),
    st.tuples(st.just("flags"), st.integers(0, 255), st.integers(0, 9), st.integers(0, 99)),
    st.tuples(st.just("drop"), st.integers(0, 9), st.integers(0, 99)),
    st.tuples(st.just("dup"), st.integers(0, 9), st.integers(0, 99)),
    st.tuples(st.just("marks"), st.lists(st.tuples(interesting(64), st.integers(0, U64)), max_size=3)),
    st.tuples(st.just("count"), st.integers(0, 9), st.integers(-2, 2)),
    st.tuples(st.just("bytes"), st.integers(0, 1 << 16), st.integers(1, 255)),
    st.tuples(st.just("cut"), st.integers(1, 64)),
)


def mutate(seed: Seed, ops: list[tuple]) -> tuple[Seed, list[tuple]]:
    """Structural mutations applied to the fields; byte-level ones returned for later."""
    s = copy.deepcopy(seed)
    late = []
    for op in ops:
        kind = op[0]
        if kind == "header":
            setattr(s, op[1], op[2] & ((1 << HEADER_FIELDS[op[1]]) - 1))
        elif kind == "marks":
            s.marks = list(op[1])
        elif kind in ("count", "bytes", "cut"):
            late.append(op)
        elif s.groups:
            gi = op[-1 if kind == "group" else -2] % len(s.groups)
            pg, me, records = s.groups[gi]
            if kind == "group" and op[1] == "pg":
                pg = op[2] & U32
            elif kind == "group":
                me = op[2] & U64
            elif records:
                ri = op[-1] % len(records)
                if kind == "record":
                    value = op[2] & ((1 << RECORD_FIELDS[op[1]]) - 1)
                    records[ri] = replace(records[ri], **{op[1]: value})
                elif kind == "flags":
                    records[ri] = replace(records[ri], flags=RecordFlags(op[1] & 3))
                elif kind == "drop":
                    del records[ri]
                elif kind == "dup":
                    records.append(records[ri])
            s.groups[gi] = (pg, me, records)
    return s, late


def encode(s: Seed, late: list[tuple]) -> bytes:
    groups = [(pg, me, [r.encode() for r in records]) for pg, me, records in s.groups]
    frame = encode_batch_with_encoded_records(s.seq, s.volume_epoch, s.vdl, s.pgmrpl, groups, s.marks)
    body = bytearray(frame[:-4])
    for op in late:
        if op[0] == "count":  # the frame's group count (+-), CRC fixed
            (n,) = struct.unpack_from("<I", body, 36)
            struct.pack_into("<I", body, 36, max(0, min(U32, n + op[2])))
        elif op[0] == "bytes" and body:
            body[op[1] % len(body)] ^= op[2]
        elif op[0] == "cut":
            del body[-min(op[1], len(body)):]
    return bytes(body) + struct.pack("<I", crc32c(bytes(body)))


def state(log: SegmentLog) -> tuple:
    return (log.scl, list(log.chain), dict(log.pending), set(log.above), log.meta.to_json())


def rebuilt(log: SegmentLog, stored: dict[int, Record]) -> SegmentLog:
    meta = copy.deepcopy(log.meta)
    return SegmentLog(meta, [(r.lsn, r.prev_lsn_in_pg) for r in stored.values() if r.lsn > meta.floor])


def intake(segments: dict[int, tuple[SegmentLog, dict[int, Record]]], data: bytes) -> str:
    """What node intake does with one binary message (intake.log_stream / apply_frame),
    minus the I/O; returns how it ended."""
    try:
        frame = decode_frame(data)
        check_claims(frame)
    except ProtocolError as exc:
        return exc.code
    outcome = "accepted"
    for group in frame.groups:
        if group.pg not in segments:
            continue  # unknown_segment
        log, stored = segments[group.pg]
        before = state(log)
        try:
            log.check_write(frame.volume_epoch, group.membership_epoch, frame.writer_vdl, group.records)
        except ProtocolError as exc:
            assert state(log) == before, "a refused group changed the segment"
            outcome = exc.code
            continue
        for r in log.accept(group.records):
            stored[r.lsn] = r
        log.note_vdl(frame.writer_vdl)
    return outcome


OUTCOMES: dict[str, int] = {}


@settings(max_examples=FUZZ_CASES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(1, 6), st.lists(mutation, min_size=1, max_size=3))
def test_fuzzed_frames_never_crash_or_poison_a_segment(per_pg, ops) -> None:
    segments = {pg: fleet_segment(pg) for pg in PGS}
    seed = writer_frame({pg: log for pg, (log, _s) in segments.items()}, per_pg)
    data = encode(*mutate(seed, ops))
    outcome = intake(segments, data)
    OUTCOMES[outcome] = OUTCOMES.get(outcome, 0) + 1
    for pg, (log, stored) in segments.items():
        meta = log.meta
        assert meta.volume_epoch == VOLUME_EPOCH and meta.membership_epoch == MEMBERSHIP_EPOCH
        assert meta.floor <= meta.vdl_hint <= log.scl, (pg, meta)
        assert meta.truncations == [TRUNCATION]
        assert all(r.pg == pg for r in stored.values())
        assert state(rebuilt(log, stored)) == state(log)


def test_the_unmutated_writer_frame_is_accepted() -> None:
    segments = {pg: fleet_segment(pg) for pg in PGS}
    seed = writer_frame({pg: log for pg, (log, _s) in segments.items()}, 3)
    assert intake(segments, encode(seed, [])) == "accepted"
    assert all(log.scl > 1440 and log.meta.vdl_hint == 1440 for log, _s in segments.values())
