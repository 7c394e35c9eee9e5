"""The writer's side of the replica feed (format: tidemark_protocol.feed).

Collects the pages of every submitted mini-transaction and, each time VDL moves, sends
each connected replica one update: the new VDL, the per-PG tails at it and the pages
changed since the previous update. Replicas answer with their oldest read point, which
the writer folds into PGMRPL while they stay connected.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import time
from collections import deque

import structlog
from aiohttp import WSMsgType, web

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.feed import AUTH_SCHEME, UNCHAINED, VdlUpdate, decode, encode_update
from tidemark_protocol.records import Record

from .writer import Writer

log = structlog.get_logger("tidemark.feed")

MAX_BACKLOG = 10_000  # updates queued for one replica; beyond that it is dropped (it reconnects)


class ChangeFeed:
    def __init__(self, writer: Writer, token: str | None = None) -> None:
        self.writer = writer
        # None: loopback peers only (the playground). Else every peer must present it.
        self.token = token
        self.last_vdl = writer.vdl
        self._submitted: deque[tuple[int, set[int]]] = deque()  # (CPL, pages), not yet durable
        self._queues: dict[object, asyncio.Queue[str | None]] = {}
        writer.on_submit.append(self._on_submit)
        writer.on_vdl.append(self._on_vdl)

    @property
    def replicas(self) -> int:
        return len(self._queues)

    def _on_submit(self, records: list[Record]) -> None:
        self._submitted.append((records[-1].lsn, {r.page for r in records}))

    def _update(self, prev: int, pages: list[int]) -> VdlUpdate:
        core = self.writer.core
        vdl = self.last_vdl
        return VdlUpdate(core.volume_epoch, vdl, prev, {pg: core.read_tail(pg, vdl) for pg in core.trackers},
                         pages, time.time_ns() // 1000)

    def _on_vdl(self, vdl: int) -> None:
        if vdl <= self.last_vdl:
            return
        pages: set[int] = set()
        while self._submitted and self._submitted[0][0] <= vdl:
            pages |= self._submitted.popleft()[1]
        prev, self.last_vdl = self.last_vdl, vdl
        if not self._queues:
            return
        text = encode_update(self._update(prev, sorted(pages)))
        for key, queue in list(self._queues.items()):
            if queue.qsize() >= MAX_BACKLOG:
                log.warning("replica_dropped", reason="backlog")
                self._queues.pop(key)
                queue.put_nowait(None)
            else:
                queue.put_nowait(text)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """GET /v1/feed (WebSocket): loopback peers, or with a token every peer presenting it."""
        peer = request.remote or ""
        if self.token is not None:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"{AUTH_SCHEME} {self.token}".encode()):
                log.warning("feed_refused", peer=peer, reason="bad or missing token")
                raise web.HTTPUnauthorized(text="the replica feed needs the instances' token")
        else:
            try:
                if not ipaddress.ip_address(peer).is_loopback:
                    raise web.HTTPForbidden(text="the replica feed serves loopback peers only")
            except ValueError:
                raise web.HTTPForbidden(text="the replica feed serves loopback peers only") from None
        ws = web.WebSocketResponse(heartbeat=5.0)
        await ws.prepare(request)
        key = object()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        queue.put_nowait(encode_update(self._update(UNCHAINED, [])))  # same loop turn: the chain holds
        self._queues[key] = queue
        sender = asyncio.create_task(self._send(ws, queue))
        log.info("replica_connected", peer=peer)
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                try:
                    value = decode(msg.data)
                except MalformedFrame as exc:
                    log.warning("feed_message_refused", error=str(exc))
                    continue
                if isinstance(value, int):
                    self.writer.remote_read_points[key] = value
        finally:
            self._queues.pop(key, None)
            self.writer.remote_read_points.pop(key, None)
            sender.cancel()
            log.info("replica_disconnected", peer=peer)
        return ws

    @staticmethod
    async def _send(ws: web.WebSocketResponse, queue: asyncio.Queue[str | None]) -> None:
        try:
            while (text := await queue.get()) is not None:
                await ws.send_str(text)
        except (ConnectionError, RuntimeError):
            pass
        await ws.close()
