"""Group commit: changes to stored state go through one queue, and everything that queued
while a synced write was in flight goes into the next single RocksDB write.

Every write of records, page versions, index entries, deletes and segment metas goes
through it. The exceptions are bulk loads and faults, none of which touch a meta:
- a hydration's snapshot SST file is ingested on the committer's thread
  (`run_ordered`), so it is ordered with the queued writes (hydration/sst_loader.py);
- a restore install ingests its SST file directly, after a queued range delete has
  wiped the (empty) segment; the meta follows through the queue (install.py);
- the node's generation is written once at load, before the committer starts (app.py);
- fault injection (faults.py, `--enable-fault-injection` only) overwrites stored values
  in place, as a failing disk would.

Ordering matters: a segment's in-memory state (SegmentLog) advances when records are
accepted, before they are durable. Because one writer drains the queue in order and
each batch carries the meta of every segment it touches (serialized at build time),
the meta on disk always matches the records on disk, and `durable_scl` — the only SCL
ever reported — is the SCL as of the batch that has just been synced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from tidemark_protocol import keys

from .segments import Segment
from .store import Store
from .telemetry import Telemetry

log = structlog.get_logger("tidemark.node.commit")


@dataclass(slots=True)
class CommitItem:
    puts: list[tuple[bytes, bytes]]
    deletes: list[bytes]
    ranges: list[tuple[bytes, bytes]]  # delete_range [begin, end)
    segments: list[Segment]
    future: asyncio.Future
    records: int = 0
    nbytes: int = 0
    frames: int = 0


class Committer:
    def __init__(self, store: Store, telemetry: Telemetry) -> None:
        self.store = store
        self.tm = telemetry
        self._queue: list[CommitItem] = []
        self._wake = asyncio.Event()
        # One thread: writes are serialized anyway, and order must be preserved.
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._task: asyncio.Task | None = None
        self.failed: BaseException | None = None
        self.commits = 0

    @property
    def queued(self) -> int:
        """Changes waiting for the next write (background work backs off while > 0)."""
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="committer")

    async def run_ordered(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking store operation on the committer's thread, ordered with its
        writes (e.g. ingesting a hydrated SST file after a segment DELETE's range delete)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def submit(
        self,
        segments: list[Segment],
        puts: list[tuple[bytes, bytes]] | None = None,
        deletes: list[bytes] | None = None,
        ranges: list[tuple[bytes, bytes]] | None = None,
        records: int = 0,
        nbytes: int = 0,
        frames: int = 0,
    ) -> asyncio.Future:
        """Queue a change; the future resolves once it (and the metas) are synced."""
        fut = asyncio.get_running_loop().create_future()
        if self.failed is not None:
            fut.set_exception(RuntimeError(f"storage failed: {self.failed}"))
            return fut
        self._queue.append(
            CommitItem(puts or [], deletes or [], ranges or [], segments, fut, records, nbytes, frames)
        )
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                items, self._queue = self._queue, []
                batch = self.store.batch()
                touched: dict[int, Segment] = {}
                records = nbytes = frames = from_writer = 0
                for item in items:
                    for k in item.deletes:
                        batch.delete(k)
                    for begin, end in item.ranges:
                        batch.delete_range(begin, end)
                    for k, v in item.puts:
                        batch.put(k, v)
                    for seg in item.segments:
                        touched[id(seg)] = seg
                    records += item.records
                    if item.frames:
                        from_writer += item.records
                    nbytes += item.nbytes
                    frames += item.frames
                snaps: list[tuple[Segment, int]] = []
                for seg in touched.values():
                    if not seg.deleted:
                        batch.put(keys.meta_key(seg.pg), seg.meta_bytes())
                        snaps.append((seg, seg.log.scl))
                if not snaps and not any(i.puts or i.deletes or i.ranges for i in items):
                    # Nothing to store (a frame with no records, e.g. one carrying only
                    # the writer's VDL): what queued before it is synced already, so
                    # answer without a write and its fsync.
                    self._resolve(items)
                    continue
                t0 = time.perf_counter()
                with self.tm.tracer.start_as_current_span("batch_commit") as span:
                    span.set_attribute("tidemark.frames", frames)
                    span.set_attribute("tidemark.records", records)
                    span.set_attribute("tidemark.items", len(items))
                    span.set_attribute("tidemark.frame_bytes", nbytes)
                    try:
                        await loop.run_in_executor(self._pool, self.store.write, batch)
                    except Exception as exc:  # a failed sync leaves memory ahead of disk
                        self.failed = exc
                        log.critical("storage_write_failed", error=str(exc))
                        for item in items:
                            if not item.future.done():
                                item.future.set_exception(RuntimeError(f"storage failed: {exc}"))
                        continue
                self.tm.sync_latency.record(time.perf_counter() - t0)
                self.tm.commits.add(1)
                if from_writer:
                    self.tm.records_received.add(from_writer)
                self.commits += 1
                for seg, scl in snaps:
                    seg.durable_scl = scl
                self._resolve(items)

    @staticmethod
    def _resolve(items: list[CommitItem]) -> None:
        for item in items:
            if not item.future.done():
                item.future.set_result(None)

    async def close(self) -> None:
        # Let queued work finish, then stop the loop task.
        for _ in range(100):
            if not self._queue:
                break
            await asyncio.sleep(0.01)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        self._pool.shutdown(wait=True)
