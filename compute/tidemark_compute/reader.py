"""A read-only client of the volume, for read replicas.

It never opens the volume as a writer (no recovery, no seal: that would fence the real
writer). It follows a writer's replica feed (tidemark_protocol.feed) for VDL, the
per-PG tails and the pages changed, reads pages at a read point with the writer's
hedged read, and reports its read point back so the writer keeps it in PGMRPL.

Reads go without a volume epoch: a read at a point that was durable stays right across
a new writer's seal (the truncation starts above every acknowledged VDL), so replica
reads go on while a failover replaces the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import structlog
from opentelemetry import metrics

from tidemark_protocol.feed import AUTH_SCHEME, UNCHAINED, VdlUpdate, decode, encode_read_point
from tidemark_protocol.node_auth import Role

from .hedged import ReadFailed, hedged_read
from .topology import Topology

log = structlog.get_logger("tidemark.reader")
meter = metrics.get_meter("tidemark.replica")
lag_histogram = meter.create_histogram("tidemark_replica_lag", unit="ms",
                                       description="writer VDL move to the replica learning it")

REPORT_EVERY = 0.2  # s: how often an idle replica moves its reported read point up
FeedUrl = Callable[[], str | None]
TopologySource = Callable[[], Awaitable[Topology]]


@dataclass(slots=True)
class Snapshot:
    """What a new read transaction starts from (see Reader.advance)."""

    vdl: int
    tails: dict[int, int]
    changed: set[int] = field(default_factory=set)  # volume pages changed since the last snapshot
    reset: bool = False  # updates were missed: forget every cached page


class Reader:
    def __init__(self, topology: Topology, feed_url: FeedUrl, topology_source: TopologySource | None = None,
                 hedge_after: float = 0.15, feed_token: str | None = None) -> None:
        self.topology = topology
        self.feed_url = feed_url
        self._feed_headers = {"Authorization": f"{AUTH_SCHEME} {feed_token}"} if feed_token else {}
        self.topology_source = topology_source
        self.hedge_after = hedge_after
        self.session: aiohttp.ClientSession | None = None
        self._lock = threading.Lock()  # updates arrive on the loop, snapshots are taken on SQLite's thread
        self.vdl = -1  # -1: no update yet
        self.epoch = 0
        self._tails: dict[int, int] = {}
        self._changed: set[int] = set()
        self._reset = True
        self.connected = False
        self._last_lag_ms = 0.0
        self._down_since = time.monotonic()
        self._first = asyncio.Event()
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.updates = 0
        self._held: int | None = None  # the read point of the open read transaction
        self._reported = -1
        self._idle_task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------
    async def start(self, timeout: float = 60.0) -> None:
        """Follow the feed; returns once the first update arrived."""
        self._loop = asyncio.get_running_loop()
        self.session = self.topology.session(Role.READER, timeout=aiohttp.ClientTimeout(total=10))
        self._task = asyncio.create_task(self._follow())
        self._idle_task = asyncio.create_task(self._report_idle())
        await asyncio.wait_for(self._first.wait(), timeout)

    async def close(self) -> None:
        for task in (self._task, self._idle_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.session is not None:
            await self.session.close()

    async def _follow(self) -> None:
        assert self.session is not None
        while True:
            url = self.feed_url()
            try:
                if url is None:
                    raise ConnectionError("no writer feed known")
                async with self.session.ws_connect(url, heartbeat=5.0, headers=self._feed_headers,
                                                   timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                    self._ws = ws
                    async for msg in ws:
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            update = decode(msg.data)
                            if isinstance(update, VdlUpdate):
                                self._apply(update)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the writer is down or moving: retry
                log.debug("feed_retry", url=url, error=repr(exc))
            if self.connected:
                log.warning("feed_lost", url=url)
                self._down_since = time.monotonic()
            self._ws = None
            self.connected = False
            await asyncio.sleep(0.1)

    def _apply(self, update: VdlUpdate) -> None:
        with self._lock:
            if update.prev == UNCHAINED or update.prev != self.vdl:
                self._reset = True  # missed updates (a new connection, a new writer)
                self._changed.clear()
            else:
                self._changed.update(update.pages)
            self.vdl, self.epoch, self._tails = update.vdl, update.epoch, update.tails
        if not self.connected:
            log.info("feed_following", vdl=update.vdl, epoch=update.epoch)
        self.connected = True
        self.updates += 1
        self._last_lag_ms = max(0.0, time.time_ns() // 1000 - update.at_us) / 1000
        lag_histogram.record(self._last_lag_ms)
        self._first.set()

    # -- what replicas ask --------------------------------------------------------------
    @property
    def lag_ms(self) -> float:
        """How stale the newest VDL known here is: its delivery delay while the feed is
        up, the time since the feed dropped while it is down."""
        if self.connected:
            return self._last_lag_ms
        return max(self._last_lag_ms, (time.monotonic() - self._down_since) * 1000)

    def advance(self) -> Snapshot:
        """Any thread: the newest VDL as a read point, with the pages changed since the
        previous call (the caller's cache must drop them, or everything on `reset`)."""
        with self._lock:
            snap = Snapshot(self.vdl, dict(self._tails), self._changed, self._reset)
            self._changed, self._reset = set(), False
        return snap

    def hold(self, lsn: int) -> None:
        """Any thread: a read transaction reads at `lsn` until release(); the writer
        keeps it in PGMRPL (the previous report stays in force until this one lands,
        and it was lower, so nothing this read needs is collected meanwhile)."""
        self._held = lsn
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._send_read_point, lsn)

    def release(self) -> None:
        """Any thread: the read transaction ended; an idle replica reports the newest
        VDL with the next update, so it never holds the nodes' GC back."""
        self._held = None

    async def _report_idle(self) -> None:
        """While no read transaction is open, move the reported read point up to the
        newest VDL: our next read starts there, and an idle replica must not hold the
        nodes' garbage collection back."""
        while True:
            await asyncio.sleep(REPORT_EVERY)
            if self._held is None and self.connected and self._reported != self.vdl:
                self._send_read_point(self.vdl)

    def _send_read_point(self, lsn: int) -> None:
        self._reported = lsn
        ws = self._ws
        if ws is not None and not ws.closed:
            task = asyncio.ensure_future(ws.send_str(encode_read_point(lsn)))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # a drop is seen by _follow

    async def read_page(self, page: int, at: int, tails: dict[int, int]) -> bytes:
        """Page `page` at read point `at` (tails: the PG tails at `at`, from a Snapshot).
        A failure re-reads the topology once (a segment may have been replaced)."""
        assert self.session is not None
        pg = self.topology.layout.pg_of(page)
        tail = tails.get(pg, 0)
        for attempt in range(2):
            members = [m for m in self.topology.memberships[pg].all_members if m in self.topology.nodes]
            start = page % len(members) if members else 0  # spread reads over the segments
            candidates = members[start:] + members[:start]
            try:
                return await hedged_read(self.session, self.topology.nodes, candidates, pg, page, at, tail,
                                         None, self.hedge_after)
            except ReadFailed:
                if attempt or self.topology_source is None:
                    raise
                self.topology = await self.topology_source()
        raise AssertionError("unreachable")
