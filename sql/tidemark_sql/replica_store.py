"""A replica's view of the database pages: committed images at its read point.

The read point moves only when SQLite starts a read transaction (its SHARED lock,
see replica_vfs.py), to the newest VDL the feed announced: one read transaction sees
one VDL, never part of a transaction. Our page cache survives the move, minus the
pages the feed says changed in between (all of it after missed updates).

The torn-read fix: an exclusive-mode writer bumps SQLite's file change counter once
per exclusive lock, not per transaction, so a replica's SQLite would see no change
and mix its stale cached pages with new ones. We serve header bytes 24-27 (file change
counter) and 92-95 (version-valid-for) derived from the read point instead, so SQLite
drops its own cache at every move (ours keeps the pages that did not change).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

from tidemark_compute.reader import Reader

from .pagemap import PageMap

HEADER_MAGIC = b"SQLite format 3\0"
HEADER_PAGES = slice(28, 32)  # database size in pages
CHANGE_COUNTER = slice(24, 28)
VERSION_VALID_FOR = slice(92, 96)


class ReplicaPageStore:
    def __init__(self, reader: Reader, loop: asyncio.AbstractEventLoop, cache_pages: int = 65536,
                 timeout: float = 30.0) -> None:
        self.reader = reader
        self.loop = loop
        self.map = PageMap(reader.topology.layout)
        self.page_size = self.map.page_size
        self.zero = bytes(self.page_size)
        self.cache_pages = cache_pages
        self.timeout = timeout
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self.read_point = -1
        self._tails: dict[int, int] = {}
        self.pages = 0
        self.page_reads = 0  # from storage (cache misses)
        self.moves = 0

    # -- SQLite's thread ----------------------------------------------------------------
    def begin_read(self) -> None:
        """A read transaction starts: move to the newest VDL, drop what changed."""
        snap = self.reader.advance()
        if snap.vdl < 0:
            raise OSError("this replica has not heard from its writer yet")
        if snap.reset:
            self._cache.clear()
        else:
            for vpage in snap.changed:
                self._cache.pop(self.map.sqlite_index(vpage), None)
        if snap.vdl != self.read_point:
            self.moves += 1
        self.read_point, self._tails = snap.vdl, snap.tails
        self.reader.hold(self.read_point)
        first = self.read(0)
        self.pages = int.from_bytes(first[HEADER_PAGES], "big") if first.startswith(HEADER_MAGIC) else 0

    def end_read(self) -> None:
        self.reader.release()

    def read(self, index: int) -> bytes:
        image = self._cache.get(index)
        if image is None:
            image = self._fetch(index)
            self._cache[index] = image
            if len(self._cache) > self.cache_pages:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(index)
        if index == 0 and image.startswith(HEADER_MAGIC):
            return self._stamp(image)
        return image

    def _fetch(self, index: int) -> bytes:
        self.page_reads += 1
        coro = self.reader.read_page(self.map.volume_page(index), self.read_point, self._tails)
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def _stamp(self, image: bytes) -> bytes:
        counter = (self.read_point & 0xFFFFFFFF).to_bytes(4, "big")
        page = bytearray(image)
        page[CHANGE_COUNTER] = counter
        page[VERSION_VALID_FOR] = counter
        return bytes(page)
