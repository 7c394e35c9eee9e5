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

from tidemark_protocol.errors import MalformedFrame, ProtocolError, UnknownSegment
from tidemark_protocol.frames import MAGIC, MAX_FRAME
from tidemark_protocol.records import Record, crc32c, decode_record

from . import store as keys
from .segments import Segment
from .state import STATE, NodeState

log = structlog.get_logger("tidemark.node.intake")

_HEAD = struct.Struct("<4sQQQQI")
_GROUP = struct.Struct("<IQI")
_CRC = struct.Struct("<I")
MAX_INFLIGHT_FRAMES = 2048  # per connection: beyond this the reader waits for acks


@dataclass(slots=True)
class Group:
    pg: int
    membership_epoch: int
    records: list[Record]
    raws: list[bytes]  # encoded bytes of each record, stored as received


@dataclass(slots=True)
class Frame:
    seq: int
    volume_epoch: int
    writer_vdl: int
    pgmrpl: int
    groups: list[Group]


def decode_frame(buf: bytes) -> Frame:
    """Same checks as frames.decode_batch, but keeps each record's encoded bytes so the
    node stores them without re-encoding (one decode per record, no second CRC pass)."""
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
        records: list[Record] = []
        raws: list[bytes] = []
        for _ in range(count):
            record, nxt = decode_record(body, offset)
            if record.pg != pg:
                raise MalformedFrame(f"record lsn={record.lsn} of pg {record.pg} in group {pg}")
            records.append(record)
            raws.append(body[offset:nxt])
            offset = nxt
        groups.append(Group(pg, mepoch, records, raws))
    if offset != end_body:
        raise MalformedFrame("trailing bytes after the last group")
    return Frame(seq, epoch, vdl, pgmrpl, groups)


def decode_raw_records(buf: bytes) -> tuple[list[Record], list[bytes]]:
    """A concatenation of records (gossip response), keeping each one's bytes."""
    records: list[Record] = []
    raws: list[bytes] = []
    offset = 0
    while offset < len(buf):
        record, nxt = decode_record(buf, offset)
        records.append(record)
        raws.append(buf[offset:nxt])
        offset = nxt
    return records, raws


def stage(seg: Segment, records: list[Record], raws: list[bytes], puts: list) -> int:
    """Accept records into the segment's chain; append the new ones' keys to `puts`."""
    by_lsn = {r.lsn: raw for r, raw in zip(records, raws, strict=True)}
    fresh = seg.log.accept(records)
    if not fresh:
        return 0
    pg = seg.pg
    for r in fresh:
        puts.append((keys.log_key(pg, r.lsn), by_lsn[r.lsn]))
        puts.append((keys.index_key(pg, r.page, r.lsn), b""))
    seg.note_stored(fresh)
    return len(fresh)


async def ingest(state: NodeState, seg: Segment, records: list[Record], raws: list[bytes]) -> int:
    """Gossip/re-replication path: accept and persist durably; returns new record count."""
    puts: list = []
    n = stage(seg, records, raws, puts)
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
        fresh += stage(seg, group.records, group.raws, puts)
        seg.log.note_vdl(frame.writer_vdl)
        if frame.pgmrpl > seg.pgmrpl:
            seg.pgmrpl = frame.pgmrpl
        touched.append(seg)
        results[group.pg] = {}
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
                fut, results = apply_frame(state, frame, len(data))
                await pending.put((fut, (frame.seq, results), None))
            elif msg.type == WSMsgType.TEXT:
                tm.malformed.add(1)
                await pending.put((None, None, malformed_text("expected a binary WriteBatch frame")))
            elif msg.type == WSMsgType.ERROR:
                log.warning("ws_error", error=str(ws.exception()))
                break
    finally:
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
