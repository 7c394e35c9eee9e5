"""The writer: a page-volume API over the storage fleet.

`commit()` gives a mini-transaction its LSNs, ships its records to all six segments
of each PG it touches over the node streams and completes when VDL passes its CPL.
`read_page()` reads at a read point from one segment known to be complete, hedging
to a second when the first is slow. `Writer.open()` runs crash recovery first.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import structlog
from opentelemetry import metrics

from tidemark_protocol.errors import BackPressure, StaleEpoch
from tidemark_protocol.node_auth import Role
from tidemark_protocol.records import Record
from tidemark_protocol.recovery import RecoveryPlan
from tidemark_protocol.writer_core import DEFAULT_LAL, Change, WriterCore

from . import node_client
from .hedged import ReadFailed, hedged_read
from .node_stream import NodeStream
from .recovery_io import recover
from .topology import Topology

log = structlog.get_logger("tidemark.writer")
meter = metrics.get_meter("tidemark.writer")
commit_latency = meter.create_histogram("tidemark.writer.commit_latency", unit="ms")
commits_total = meter.create_counter("tidemark.writer.commits")


MAX_MARKS = 100_000
MembershipSource = Callable[[], Awaitable[Topology]]
__all__ = ["MembershipSource", "ReadFailed", "Writer"]


class Writer:
    def __init__(
        self,
        topology: Topology,
        session: aiohttp.ClientSession,
        plan: RecoveryPlan,
        lal: int,
        hedge_after: float = 0.15,
    ) -> None:
        self.topology = topology
        self.session = session
        self.plan = plan
        self.core = WriterCore(topology.layout, topology.memberships, plan.start_state(), lal)
        self.hedge_after = hedge_after
        self._waiters: deque[tuple[int, asyncio.Future[int]]] = deque()
        self._vdl_moved = asyncio.Event()
        # VDL transitions with their wall-clock time (µs), numbered from _marks_base.
        self._marks: deque[tuple[int, int]] = deque()
        self._marks_base = 0
        self._read_points: Counter[int] = Counter()
        self.fenced: Exception | None = None
        self._recovered: dict[int, list[Record]] = {}
        self.membership_source: MembershipSource | None = None
        self._reloading: asyncio.Task | None = None
        self._last_address_refresh = 0.0
        self.streams = {name: self._new_stream(name, url) for name, url in topology.nodes.items()}
        self._member_streams: dict[int, tuple[int, list[NodeStream]]] = {}
        # The replica feed (feed_server.py) watches commits and VDL moves; replicas'
        # read points are folded into PGMRPL so nodes keep the versions they read.
        self.on_submit: list[Callable[[list[Record]], None]] = []
        self.on_vdl: list[Callable[[int], None]] = []
        self.remote_read_points: dict[object, int] = {}

    def _new_stream(self, name: str, url: str) -> NodeStream:
        return NodeStream(
            name,
            url,
            self.session,
            on_ack=self._on_ack,
            on_resync=self._resync,
            frame_info=self._frame_info,
            membership_epoch=lambda pg: self.core.trackers[pg].membership.epoch,
            marks_since=self.marks_since,
            on_unreachable=self._on_unreachable,
        )

    def _on_unreachable(self, node: str) -> None:
        """A node has refused connections for a while: its address may have changed (a
        pod recreated elsewhere), so re-read the topology, at most every 2 s."""
        now = time.monotonic()
        if self.membership_source is None or now - self._last_address_refresh < 2.0:
            return
        self._last_address_refresh = now
        self._reload_memberships()

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    async def open(
        cls,
        topology: Topology,
        session: aiohttp.ClientSession | None = None,
        lal: int = DEFAULT_LAL,
        timeout: float = 60.0,
        membership_source: MembershipSource | None = None,
    ) -> Writer:
        """Recover the volume and open it for writes. `membership_source` returns the
        current topology (placement) when a segment says our membership is stale."""
        own_session = session is None
        session = session or topology.session(Role.WRITER, timeout=aiohttp.ClientTimeout(total=10))
        try:
            plan, sealed, rereplicate = await recover(session, topology, lal, timeout)
        except BaseException:
            if own_session:
                await session.close()
            raise
        writer = cls(topology, session, plan, lal)
        writer._own_session = own_session
        writer.membership_source = membership_source
        topology.volume_epoch = plan.volume_epoch
        for (pg, node), scl in sealed.items():
            writer.core.on_ack(pg, node, scl)
        writer._recovered = rereplicate
        for stream in writer.streams.values():
            stream.start()
        await writer._wait_recovered_durable(timeout)
        log.info("writer_open", epoch=plan.volume_epoch, vdl=plan.vdl, next_lsn=writer.core.next_lsn)
        return writer

    _own_session = False

    async def _wait_recovered_durable(self, timeout: float) -> None:
        """Recovered records may sit on one segment only: wait for a write quorum."""
        deadline = time.monotonic() + timeout
        while True:
            short = [
                pg for pg, tail in self.plan.pg_tails.items() if self.core.pgcl(pg) < tail
            ]
            if not short:
                self._recovered = {}
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"recovered records of pgs {short} did not reach a write quorum")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for stream in self.streams.values():
            await stream.close()
        for _cpl, fut in self._waiters:
            if not fut.done():
                fut.set_exception(ConnectionError("writer closed"))
        if self._own_session:
            await self.session.close()

    # -- watermarks for the node streams -----------------------------------------------
    @property
    def vdl(self) -> int:
        return self.core.vdl

    def pgmrpl(self) -> int:
        local = min(self._read_points, default=self.core.vdl)
        # Never above the VDL: nodes refuse a frame whose PGMRPL exceeds its VDL
        # (frames.check_claims), whatever a replica's feed says.
        return min(local, min(self.remote_read_points.values(), default=local), self.core.vdl)

    def _frame_info(self) -> tuple[int, int, int]:
        return self.core.volume_epoch, self.core.vdl, self.pgmrpl()

    def marks_since(self, position: int) -> tuple[list[tuple[int, int]], int]:
        """VDL marks a stream has not sent yet, and its new position."""
        start = max(position - self._marks_base, 0)
        end = self._marks_base + len(self._marks)
        if start >= len(self._marks):
            return [], end
        # From the right end: islice from the left walks every older mark first (up
        # to MAX_MARKS, for each of six streams on every frame).
        fresh = list(itertools.islice(reversed(self._marks), len(self._marks) - start))
        fresh.reverse()
        return fresh, end

    # -- writes -----------------------------------------------------------------------
    async def commit(self, changes: Iterable[Change]) -> int:
        """Durably commit one mini-transaction; returns its CPL LSN once VDL ≥ it."""
        started = time.perf_counter()
        _cpl, fut = await self.submit(changes)
        cpl = await fut
        commit_latency.record((time.perf_counter() - started) * 1000)
        commits_total.add(1)
        return cpl

    async def submit(self, changes: Iterable[Change]) -> tuple[int, asyncio.Future[int]]:
        """Allocate and ship; returns the CPL LSN and a future completing when durable.

        Nothing leaves the process before the caller's next await, so a caller may log
        the CPL (an intent) before any record can reach a node."""
        changes = list(changes)
        while True:
            if self.fenced is not None:
                raise self.fenced
            try:
                records = self.core.allocate(changes)
                break
            except BackPressure:
                self._vdl_moved.clear()
                await self._vdl_moved.wait()
        streams_of = self._streams_of
        for record in records:
            encoded = record.encode()
            for stream in streams_of(record.pg):
                stream.enqueue(record.pg, encoded)
        for observe in self.on_submit:
            observe(records)
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append((records[-1].lsn, fut))
        return records[-1].lsn, fut

    def _on_ack(self, node: str, ack: dict[str, Any]) -> None:
        if ack.get("seq") is None:
            log.error("frame_refused", node=node, error=ack.get("error"), message=ack.get("message"))
            return
        moved = False
        for pg_key, result in ack.get("results", {}).items():
            pg = int(pg_key)
            error = result.get("error")
            if error == "stale_epoch":
                self._fence(StaleEpoch(f"{node}: {result.get('message')}"))
                return
            if error == "needs_seal":
                self.streams[node].needs_resync = True
            if error == "stale_membership":
                self._reload_memberships()
            if "scl" in result and pg in self.core.trackers:
                moved |= self.core.on_ack(pg, node, int(result["scl"]))
        if moved:
            self._complete()

    def _complete(self) -> None:
        vdl = self.core.vdl
        self._marks.append((vdl, time.time_ns() // 1000))
        if len(self._marks) > MAX_MARKS:  # a stream gone for long misses old marks
            self._marks.popleft()
            self._marks_base += 1
        waiters = self._waiters
        while waiters and waiters[0][0] <= vdl:
            _cpl, fut = waiters.popleft()
            if not fut.done():
                fut.set_result(_cpl)
        self.core.forget_below(self.pgmrpl())  # reads below PGMRPL are over: bounded history
        self._vdl_moved.set()
        for observe in self.on_vdl:
            observe(vdl)

    def _streams_of(self, pg: int) -> list[NodeStream]:
        """The streams of a PG's members, cached per membership epoch (hot path)."""
        membership = self.core.trackers[pg].membership
        cached = self._member_streams.get(pg)
        if cached is None or cached[0] != membership.epoch:
            streams = [self.streams[m] for m in membership.all_members if m in self.streams]
            cached = self._member_streams[pg] = (membership.epoch, streams)
        return cached[1]

    def _reload_memberships(self) -> None:
        """A PG's membership changed (a segment is being replaced): fetch the new one,
        stream to new members, and re-send what the refused frames carried."""
        if self.membership_source is None:
            log.error("stale_membership_without_source")
            return
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.create_task(self._reload())

    async def _reload(self) -> None:
        try:
            topology = await self.membership_source()
        except Exception as exc:  # noqa: BLE001 - a failed lookup is retried on the next trigger
            log.warning("topology_reload_failed", error=repr(exc))
            return
        for name, url in topology.nodes.items():
            if name not in self.streams:
                self.topology.nodes[name] = url
                self.streams[name] = stream = self._new_stream(name, url)
                stream.start()
            elif self.streams[name].url != url:
                log.info("node_address_changed", node=name, old=self.streams[name].url, new=url)
                self.topology.nodes[name] = url
                self.streams[name].url = url  # the stream's next connect uses it
        changed = False
        for pg, membership in topology.memberships.items():
            if membership.epoch > self.core.trackers[pg].membership.epoch:
                self.topology.memberships[pg] = membership
                self.core.set_membership(pg, membership)
                changed = True
        if changed:
            log.info("memberships_reloaded", epochs={pg: m.epoch for pg, m in self.topology.memberships.items()})
            self._complete()
            for stream in self.streams.values():
                stream.needs_resync = True
                stream.poke()

    def _fence(self, exc: Exception) -> None:
        if self.fenced is None:
            log.error("writer_fenced", error=str(exc))
        self.fenced = exc
        while self._waiters:
            _cpl, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self._vdl_moved.set()

    async def _resync(self, stream: NodeStream) -> None:
        """After (re)connecting: seal the node at our epoch, then re-send what it lacks."""
        pgs = self.topology.pgs_of(stream.name)
        try:
            scls = await node_client.seal(
                self.session, stream.url, self.core.volume_epoch, self.plan.truncations, pgs
            )
        except node_client.NodeRequestError as exc:
            if exc.code == "stale_epoch":
                self._fence(StaleEpoch(str(exc)))
            stream.needs_resync = True
            await asyncio.sleep(0.2)
            return
        except (TimeoutError, aiohttp.ClientError, OSError):
            stream.needs_resync = True
            await asyncio.sleep(0.2)
            return
        moved = False
        for pg, scl in scls.items():
            if pg in self.core.trackers:
                moved |= self.core.on_ack(pg, stream.name, scl)
        if moved:
            self._complete()
        for pg in pgs:
            scl = self.core.scl(pg, stream.name)
            records = [r for r in self._recovered.get(pg, ()) if r.lsn > scl]
            records += [r for r in self.core.unstable[pg] if r.lsn > scl]
            epoch = self.core.trackers[pg].membership.epoch
            for i in range(0, len(records), 2048):
                chunk = [r.encode() for r in records[i : i + 2048]]
                await stream.send_now([(pg, epoch, chunk)])

    # -- reads ------------------------------------------------------------------------
    async def read_page(self, page: int, at: int | None = None) -> bytes:
        read_point = self.core.vdl if at is None else at
        pg = self.topology.layout.pg_of(page)
        tail = self.core.read_tail(pg, read_point)
        self._read_points[read_point] += 1
        try:
            return await self._hedged_read(pg, page, read_point, tail)
        finally:
            self._read_points[read_point] -= 1
            if not self._read_points[read_point]:
                del self._read_points[read_point]

    async def _hedged_read(self, pg: int, page: int, at: int, tail: int) -> bytes:
        complete = self.core.trackers[pg].complete_segments(tail)
        others = [m for m in self.core.trackers[pg].membership.all_members if m not in complete]
        candidates = [c for c in complete + others if c in self.topology.nodes]
        return await hedged_read(self.session, self.topology.nodes, candidates, pg, page, at, tail,
                                 self.core.volume_epoch, self.hedge_after)
