"""Log intake: decode write batch frames once (frames.decode_frame keeps each record's
encoded bytes), check epochs per PG group, accept records into SegmentLog, and hand the
new ones to the group committer. Acks go out per frame, in order, once the commit
holding the frame's records is synced.

Gossip feeds pulled records through `ingest`, the same accept + persist path.
"""

from __future__ import annotations

import asyncio
import json

import structlog
from aiohttp import WSMsgType, web

from tidemark_protocol import keys
from tidemark_protocol.errors import MalformedFrame, ProtocolError, UnknownSegment
from tidemark_protocol.frames import MAX_FRAME, Frame, check_claims, decode_frame
from tidemark_protocol.records import EncodedRecord

from .segments import Segment
from .state import STATE, NodeState

log = structlog.get_logger("tidemark.node.intake")

MAX_INFLIGHT_FRAMES = 2048  # per connection: beyond this the reader waits for acks


def stage(seg: Segment, records: list[EncodedRecord], puts: list) -> int:
    """Accept records into the segment's chain; append the new ones' keys to `puts`."""
    fresh = seg.log.accept(records)
    if not fresh:
        return 0
    pg = seg.pg
    log_key, index_key = keys.log_key, keys.index_key
    for r in fresh:
        puts.append((log_key(pg, r.lsn), r.raw))
        puts.append((index_key(pg, r.page, r.lsn), b""))
    seg.note_stored(fresh)
    return len(fresh)


async def ingest(state: NodeState, seg: Segment, records: list[EncodedRecord]) -> int:
    """Gossip/re-replication path: accept and persist durably; returns new record count."""
    puts: list = []
    n = stage(seg, records, puts)
    if n:
        await state.committer.submit([seg], puts=puts, records=n)
    return n


def apply_frame(state: NodeState, frame: Frame, nbytes: int) -> tuple[asyncio.Future, dict]:
    """Synchronous part of a frame: epoch and claim checks (SegmentLog.check_write; the
    frame-wide ones, frames.check_claims, ran before) and accept. A frame never raises a
    membership epoch (only PUT /v1/segments does). Returns the commit future and per-PG
    results (the SCLs are filled in once the commit is synced)."""
    results: dict[int, dict] = {}
    puts: list = []
    touched: list[Segment] = []
    fresh = 0
    for group in frame.groups:
        seg = state.segments.get(group.pg)
        try:
            if seg is None:
                raise UnknownSegment(f"pg {group.pg} is not hosted here")
            seg.log.check_write(frame.volume_epoch, group.membership_epoch, frame.writer_vdl, group.records)
        except ProtocolError as exc:
            results[group.pg] = {"error": exc.code, "message": str(exc)}
            state.telemetry.refused_groups.add(1, {"code": exc.code})
            continue
        fresh += stage(seg, group.records, puts)
        seg.log.note_vdl(frame.writer_vdl)
        if frame.pgmrpl > seg.pgmrpl:
            seg.pgmrpl = frame.pgmrpl
        touched.append(seg)
        results[group.pg] = {}
    marks = state.backup_marks  # backup: VDL marks map time -> LSN
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


def refusal_text(seq: int, exc: ProtocolError) -> str:
    """A whole frame refused (nothing of it applied), in the ack's place."""
    return json.dumps({"seq": seq, "error": exc.code, "message": str(exc)})


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
                    check_claims(frame)
                except ProtocolError as exc:
                    log.warning("implausible_frame", peer=request.remote, seq=frame.seq, error=str(exc))
                    await pending.put((None, None, refusal_text(frame.seq, exc)))
                    continue
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
