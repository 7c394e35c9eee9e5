"""Log intake: decode WriteBatch frames once, check epochs per PG group, accept records
into SegmentLog, and hand the new ones to the group committer. Acks go out per frame,
in order, once the commit holding the frame's records is synced.

Gossip feeds pulled records through `ingest`, the same accept + persist path.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass

import structlog
from aiohttp import WSMsgType, web

from tidemark_protocol.errors import CorruptRecord, MalformedFrame, ProtocolError, UnknownSegment
from tidemark_protocol.frames import MAGIC, MAX_FRAME, decode_marks
from tidemark_protocol.records import FORMAT_VERSION, MAX_PAYLOAD, RecordFlags, crc32c

from . import store as keys
from .segments import Segment
from .state import STATE, NodeState

log = structlog.get_logger("tidemark.node.intake")

_HEAD = struct.Struct("<4sQQQQI")
_GROUP = struct.Struct("<IQI")
_CRC = struct.Struct("<I")
_RECORD = struct.Struct("<BBHIQQQQI")  # records.py header, format version 1
_VALID_FLAGS = frozenset(int(f) for f in range(4) if RecordFlags(f) == f)
MAX_INFLIGHT_FRAMES = 2048  # per connection: beyond this the reader waits for acks


class Rec:
    """What intake needs of a record: the SegmentLog fields plus its encoded bytes.

    A plain slotted class rather than protocol Record: decoding is the hot loop (one
    object per record at ~100k records/s per node), and SegmentLog only reads
    lsn / pg / prev_lsn_in_pg."""

    __slots__ = ("lsn", "pg", "page", "prev_lsn_in_pg", "raw")

    def __init__(self, lsn: int, pg: int, page: int, prev: int, raw: bytes) -> None:
        self.lsn = lsn
        self.pg = pg
        self.page = page
        self.prev_lsn_in_pg = prev
        self.raw = raw


@dataclass(slots=True)
class Group:
    pg: int
    membership_epoch: int
    records: list[Rec]


@dataclass(slots=True)
class Frame:
    seq: int
    volume_epoch: int
    writer_vdl: int
    pgmrpl: int
    groups: list[Group]
    vdl_marks: list[tuple[int, int]]  # (vdl, unix time µs): kept for point-in-time restore


def decode_records_raw(buf: bytes, offset: int, end: int, count: int | None, pg: int | None) -> tuple[list[Rec], int]:
    """Decode records from buf[offset:end] with exactly the checks of
    records.decode_record (version, length, CRC32C, back-links, flags); `count` records
    (or until `end` when None), each of PG `pg` when given."""
    out: list[Rec] = []
    unpack = _RECORD.unpack_from
    hsize = _RECORD.size
    n = 0
    while (n < count) if count is not None else (offset < end):
        if end - offset < hsize + 4:
            raise MalformedFrame("record truncated: shorter than its header")
        version, flags, _r, rpg, lsn, page, prev, prev_page, plen = unpack(buf, offset)
        if version != FORMAT_VERSION:
            raise MalformedFrame(f"unsupported record format version {version}")
        if plen > MAX_PAYLOAD:
            raise MalformedFrame(f"record payload length {plen} exceeds {MAX_PAYLOAD}")
        stop = offset + hsize + plen + 4
        if stop > end:
            raise MalformedFrame("record truncated: payload or crc missing")
        raw = buf[offset:stop]
        if crc32c(raw[:-4]) != int.from_bytes(raw[-4:], "little"):
            raise CorruptRecord(f"record lsn={lsn} pg={rpg}: crc32c mismatch")
        if lsn == 0 or prev >= lsn or prev_page >= lsn:
            raise MalformedFrame(f"record lsn={lsn}: back-links must point below its lsn")
        if flags not in _VALID_FLAGS:
            raise MalformedFrame(f"record lsn={lsn}: unknown flags {flags:#x}")
        if pg is not None and rpg != pg:
            raise MalformedFrame(f"record lsn={lsn} of pg {rpg} in group {pg}")
        out.append(Rec(lsn, rpg, page, prev, raw))
        offset = stop
        n += 1
    return out, offset


def decode_frame(buf: bytes) -> Frame:
    """Same checks as frames.decode_batch, but keeps each record's encoded bytes so the
    node stores them without re-encoding, and builds only light `Rec` objects."""
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
    groups: list[Group] = []
    for _ in range(ngroups):
        if end_body - offset < _GROUP.size:
            raise MalformedFrame("frame truncated in a group header")
        pg, mepoch, count = _GROUP.unpack_from(body, offset)
        offset += _GROUP.size
        records, offset = decode_records_raw(body, offset, end_body, count, pg)
        groups.append(Group(pg, mepoch, records))
    marks = decode_marks(body, offset, end_body)
    return Frame(seq, epoch, vdl, pgmrpl, groups, marks)


def decode_raw_records(buf: bytes) -> list[Rec]:
    """A concatenation of records (gossip response)."""
    return decode_records_raw(buf, 0, len(buf), None, None)[0]


def stage(seg: Segment, records: list[Rec], puts: list) -> int:
    """Accept records into the segment's chain; append the new ones' keys to `puts`."""
    fresh = seg.log.accept(records)  # type: ignore[arg-type]  # duck-typed Rec
    if not fresh:
        return 0
    pg = seg.pg
    log_key, index_key = keys.log_key, keys.index_key
    for r in fresh:
        puts.append((log_key(pg, r.lsn), r.raw))  # type: ignore[attr-defined]
        puts.append((index_key(pg, r.page, r.lsn), b""))
    seg.note_stored(fresh)
    return len(fresh)


async def ingest(state: NodeState, seg: Segment, records: list[Rec]) -> int:
    """Gossip/re-replication path: accept and persist durably; returns new record count."""
    puts: list = []
    n = stage(seg, records, puts)
    if n:
        await state.committer.submit([seg], puts=puts, records=n)
    return n


def apply_frame(state: NodeState, frame: Frame, nbytes: int) -> tuple[asyncio.Future, dict]:
    """Synchronous part of a frame: epoch checks and accept. Returns the commit future
    and per-PG results (the SCLs are filled in once the commit is synced)."""
    results: dict[int, dict] = {}
    puts: list = []
    touched: list[Segment] = []
    fresh = 0
    for group in frame.groups:
        seg = state.segments.get(group.pg)
        try:
            if seg is None:
                raise UnknownSegment(f"pg {group.pg} is not hosted here")
            seg.log.check_epochs(frame.volume_epoch, group.membership_epoch)
        except ProtocolError as exc:
            results[group.pg] = {"error": exc.code, "message": str(exc)}
            state.telemetry.refused_groups.add(1, {"code": exc.code})
            continue
        seg.log.note_membership_epoch(group.membership_epoch)
        fresh += stage(seg, group.records, puts)
        seg.log.note_vdl(frame.writer_vdl)
        if frame.pgmrpl > seg.pgmrpl:
            seg.pgmrpl = frame.pgmrpl
        touched.append(seg)
        results[group.pg] = {}
    marks = getattr(state, "backup_marks", None)  # backup: VDL marks map time -> LSN
    if marks is not None and frame.vdl_marks:
        marks.extend(frame.vdl_marks)
    fut = state.committer.submit(touched, puts=puts, records=fresh, nbytes=nbytes, frames=1)
    return fut, results


def ack_text(state: NodeState, seq: int, results: dict[int, dict]) -> str:
    out = {}
    for pg, res in results.items():
        seg = state.segments.get(pg)
        res["scl"] = seg.durable_scl if seg is not None else 0
        out[str(pg)] = res
    return json.dumps({"seq": seq, "results": out}, separators=(",", ":"))


def malformed_text(message: str) -> str:
    return json.dumps({"seq": None, "error": MalformedFrame.code, "message": message})


async def log_stream(request: web.Request) -> web.WebSocketResponse:
    """GET /v1/log: one WebSocket per writer connection."""
    state: NodeState = request.app[STATE]
    ws = web.WebSocketResponse(max_msg_size=MAX_FRAME + 1024, autoping=True, heartbeat=30)
    await ws.prepare(request)
    state.sockets.add(ws)
    pending: asyncio.Queue = asyncio.Queue(MAX_INFLIGHT_FRAMES)
    sender = asyncio.get_running_loop().create_task(_send_acks(state, ws, pending))
    tm = state.telemetry
    try:
        async for msg in ws:
            if msg.type == WSMsgType.BINARY:
                data: bytes = msg.data
                tm.bytes_received.add(len(data))
                try:
                    frame = decode_frame(data)
                except ProtocolError as exc:
                    tm.malformed.add(1)
                    log.warning("malformed_frame", peer=request.remote, error=str(exc))
                    await pending.put((None, None, malformed_text(str(exc))))
                    continue
                except Exception as exc:  # never let a hostile frame take the node down
                    tm.malformed.add(1)
                    log.warning("malformed_frame", peer=request.remote, error=repr(exc))
                    await pending.put((None, None, malformed_text(f"undecodable frame: {exc!r}")))
                    continue
                tm.batches.add(1)
                try:
                    fut, results = apply_frame(state, frame, len(data))
                except Exception as exc:  # a node bug: refuse this frame, keep serving
                    log.exception("apply_frame_failed", seq=frame.seq)
                    text = json.dumps({"seq": frame.seq, "error": "internal", "message": repr(exc)})
                    await pending.put((None, None, text))
                    continue
                await pending.put((fut, (frame.seq, results), None))
            elif msg.type == WSMsgType.TEXT:
                tm.malformed.add(1)
                await pending.put((None, None, malformed_text("expected a binary WriteBatch frame")))
            elif msg.type == WSMsgType.ERROR:
                log.warning("ws_error", error=str(ws.exception()))
                break
    finally:
        state.sockets.discard(ws)
        await pending.put(None)
        try:
            await asyncio.wait_for(sender, timeout=10)
        except (TimeoutError, asyncio.CancelledError, Exception):
            sender.cancel()
    return ws


async def _send_acks(state: NodeState, ws: web.WebSocketResponse, pending: asyncio.Queue) -> None:
    while True:
        item = await pending.get()
        if item is None:
            return
        fut, payload, text = item
        if fut is not None:
            try:
                await fut
            except Exception as exc:
                seq, _results = payload
                text = json.dumps({"seq": seq, "error": "storage_failed", "message": str(exc)})
            else:
                seq, results = payload
                text = ack_text(state, seq, results)
        if ws.closed:
            continue  # keep draining so the reader is never blocked on a full queue
        try:
            await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            continue
