"""The committed pages of the database, seen from SQLite's thread.

Reads go to the Writer on its event loop (run_coroutine_threadsafe) through a local
cache of committed images: this instance is the volume's only writer, so an image it
committed stays right until it commits the page again. A page whose last commit is
not durable yet (CPL > VDL) is never evicted: storage could not serve it yet.

Invariant: every volume page at or beyond the committed database size is all zeros
(a shrinking commit zeroes the pages it cuts off), so new pages diff against zeros.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Coroutine
from typing import Any, TypeVar

import structlog

from tidemark_compute.writer import Writer
from tidemark_protocol.pages import page_redo
from tidemark_protocol.records import CRC_SIZE, HEADER_SIZE
from tidemark_protocol.writer_core import Change

from .pagemap import PageMap
from .pipeline import CommitPipeline

T = TypeVar("T")
log = structlog.get_logger("tidemark.sql.pagestore")

HEADER_PAGES = slice(28, 32)  # SQLite header: database size in pages


class PageStore:
    def __init__(
        self,
        writer: Writer,
        loop: asyncio.AbstractEventLoop,
        pipeline: CommitPipeline,
        multi_range: bool = True,
        cache_pages: int = 65536,
        timeout: float = 30.0,
    ) -> None:
        self.writer = writer
        self.loop = loop
        self.pipeline = pipeline
        self.map = PageMap(writer.topology.layout)
        self.page_size = self.map.page_size
        self.zero = bytes(self.page_size)
        self.multi_range = multi_range
        self.cache_pages = cache_pages
        self.timeout = timeout
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cpl_of: dict[int, int] = {}  # page index -> CPL of its last commit here
        self.pages = 0  # committed database size in pages
        self.redo_bytes = 0  # encoded record bytes shipped (header + payload + CRC)
        self.records = 0
        self.commits = 0

    # -- called from SQLite's thread ----------------------------------------------------
    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(self.timeout)

    def load_size(self) -> int:
        """The committed size in pages, from SQLite's own header on page 1 (bytes 28-31,
        kept by SQLite in every transaction that changes the size)."""
        first = self.read(0)
        if first == self.zero:
            self.pages = 0
        elif not first.startswith(b"SQLite format 3\0"):
            raise OSError("volume page 0 does not hold an SQLite database header")
        else:
            self.pages = int.from_bytes(first[HEADER_PAGES], "big")
        return self.pages

    def read(self, index: int) -> bytes:
        image = self._cache.get(index)
        if image is not None:
            self._cache.move_to_end(index)
            return image
        image = self._call(self.writer.read_page(self.map.volume_page(index)))
        self._remember(index, image)
        return image

    def commit(self, dirty: dict[int, bytes], pages: int) -> int | None:
        """One mini-transaction for a SQLite transaction: redo of every changed page, and
        zeros for pages a shrink cut off. Returns its CPL (None: nothing changed)."""
        changes: list[Change] = []
        images: dict[int, bytes] = {}
        for index in sorted(dirty):
            if index >= pages:
                continue
            new = dirty[index]
            old = self.read(index) if index < self.pages or index in self._cache else self.zero
            redo = page_redo(old, new, self.multi_range)
            if redo:
                vpage = self.map.volume_page(index)
                changes += [Change(vpage, payload, full) for payload, full in redo]
                images[index] = new
        for index in range(pages, self.pages):  # shrink: keep "beyond the size is zeros"
            if self.read(index) != self.zero:
                changes.append(Change(self.map.volume_page(index), b"", True))
                images[index] = self.zero
        if not changes:
            self.pages = pages
            return None
        if pages != self.pages:  # the size a restart will read back must be this one
            header = int.from_bytes((images.get(0) or self.read(0))[HEADER_PAGES], "big")
            if header != pages:
                log.error("header_size_mismatch", header=header, pages=pages)
        cpl = self._call(self.pipeline.submit(changes))
        self.pages = pages
        self.commits += 1
        self.records += len(changes)
        self.redo_bytes += sum(len(c.payload) for c in changes) + len(changes) * (HEADER_SIZE + CRC_SIZE)
        for index, image in images.items():
            self._cpl_of[index] = cpl
            self._remember(index, image)
        return cpl

    def _remember(self, index: int, image: bytes) -> None:
        self._cache[index] = image
        self._cache.move_to_end(index)
        vdl = self.writer.vdl  # an int written by the loop: a stale read only evicts less
        for _ in range(len(self._cache) - self.cache_pages):
            oldest, oldest_image = self._cache.popitem(last=False)
            if self._cpl_of.get(oldest, 0) > vdl:  # not durable yet: keep it, try later
                self._cache[oldest] = oldest_image
                break
            self._cpl_of.pop(oldest, None)
