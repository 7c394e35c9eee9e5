"""Turns a snapshot's frames into one SST file, then ingests it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os

from ..segments import Segment
from ..state import NodeState
from ..store import Store
from .errors import SourceError, check_live
from .frame_parser import parse_frame

QUEUE_FRAMES = 2  # frames read ahead of the parser (each up to snapshot.FRAME_BYTES)
_loads = itertools.count(1)


class SstLoader:
    """Turns the snapshot's frames into one SST file, then ingests it.

    Why: put through the WAL and memtable, every page would be written three times
    (WAL, flush, compaction) at ~3x the CPU; the snapshot's keys arrive in ascending
    order (pages ascending, one version each), which is what an SST file needs, so the
    file is built as frames arrive (in a thread, one frame at a time, while the next
    frame is read) and moved into RocksDB at the end in one atomic, durable step. A
    source failing midway leaves only a scratch file, deleted here. The ingestion runs
    on the committer's thread so it is ordered with its writes, in particular with a
    DELETE's range delete: it is queued only while the segment is live.
    """

    def __init__(self, state: NodeState, seg: Segment, base: int) -> None:
        self.state = state
        self.seg = seg
        self.base = base
        name = f"pg{seg.pg}-{os.getpid()}-{next(_loads)}.sst"
        self.path = os.path.join(state.store.ingest_dir, name)
        self.sst = None
        # Frames read but not yet parsed: the reader keeps reading while a frame is
        # parsed, so a slow step on either side (a busy machine schedules each process
        # late) does not stall the other.
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE_FRAMES)
        self.task: asyncio.Task | None = None
        self.good = 0
        self.bad: list[tuple[int, int]] = []

    @staticmethod
    def clear_stale(store: Store, pg: int) -> None:
        """Scratch files of this PG's earlier hydrations (a crash, a failed source)."""
        for name in os.listdir(store.ingest_dir):
            if name.startswith(f"pg{pg}-") and name.endswith(".sst"):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(store.ingest_dir, name))

    def _parse(self, body: bytes, count: int) -> tuple[int, list]:
        if self.sst is None:
            self.sst = Store.sst_writer(self.path)
        try:
            return parse_frame(body, count, self.seg.pg, self.seg.layout, self.base,
                               self.sst.__setitem__)
        except SourceError:
            raise
        except Exception as exc:  # e.g. keys out of order: the source's stream is wrong
            raise SourceError(f"snapshot: {exc}") from exc

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while (item := await self.queue.get()) is not None:
            good, bad = await loop.run_in_executor(None, self._parse, *item)
            self.good += good
            self.bad.extend(bad)

    async def _enqueue(self, item) -> None:
        if self.task is None:
            self.task = asyncio.create_task(self._consume())
        if not self.queue.full():
            self.queue.put_nowait(item)
        else:
            waiter = asyncio.ensure_future(self.queue.put(item))
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():  # the consumer stopped: raise its error
                waiter.cancel()
                await self.task
        if self.task.done():
            await self.task  # a bad frame fails the source as soon as it is seen

    async def put(self, body: bytes, count: int) -> None:
        check_live(self.seg)
        await self._enqueue((body, count))

    async def drain(self) -> None:
        """Wait until every frame put so far is parsed (raises a frame's error)."""
        if self.task is not None:
            await self._enqueue(None)
            task, self.task = self.task, None
            await task

    async def finish(self) -> None:
        """Ingest what was loaded; durable when this returns."""
        await self.drain()
        loop = asyncio.get_running_loop()
        if self.good:
            await loop.run_in_executor(None, self.sst.finish)  # fsyncs the file
        check_live(self.seg)  # on the loop thread, right before the ingestion is queued
        if self.good:
            await self.state.committer.run_ordered(self.state.store.ingest, [self.path])

    def discard(self) -> None:
        if self.task is not None:
            self.task.cancel()
        with contextlib.suppress(OSError):
            os.remove(self.path)
