"""An in-memory stand-in for the Writer: the real page formats, no fleet."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.pages import apply_payload
from tidemark_protocol.records import RecordFlags
from tidemark_protocol.writer_core import Change


@dataclass
class _Topology:
    layout: VolumeLayout


class FakeWriter:
    def __init__(self, layout: VolumeLayout | None = None, auto_durable: bool = True) -> None:
        self.topology = _Topology(layout or VolumeLayout(4, 256, 4096))
        self.pages: dict[int, bytearray] = {}
        self.vdl = 0
        self.next_lsn = 1
        self.fenced: Exception | None = None
        self.auto_durable = auto_durable
        self.waiting: list[tuple[int, asyncio.Future[int]]] = []
        self.records: list[tuple[int, Change]] = []
        self.reads = 0
        self.on_submit: list = []  # the replica feed's hooks: this fake never feeds replicas
        self.on_vdl: list = []
        self.remote_read_points: dict = {}

    async def read_page(self, page: int, at: int | None = None) -> bytes:
        self.reads += 1
        return bytes(self.pages.get(page, bytes(self.topology.layout.page_size)))

    async def submit(self, changes: list[Change]) -> tuple[int, asyncio.Future[int]]:
        if self.fenced is not None:
            raise self.fenced
        size = self.topology.layout.page_size
        for change in changes:
            flags = RecordFlags.FULL_IMAGE if change.full_image else RecordFlags.NONE
            image = self.pages.setdefault(change.page, bytearray(size))
            apply_payload(image, flags, change.payload, size)
            self.records.append((self.next_lsn, change))
            self.next_lsn += 1
        cpl = self.next_lsn - 1
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.waiting.append((cpl, fut))
        if self.auto_durable:
            self.make_durable()
        return cpl, fut

    def make_durable(self, upto: int | None = None) -> None:
        upto = self.next_lsn - 1 if upto is None else upto
        self.vdl = max(self.vdl, upto)
        for cpl, fut in list(self.waiting):
            if cpl <= self.vdl and not fut.done():
                fut.set_result(cpl)
                self.waiting.remove((cpl, fut))

    def fence(self, exc: Exception) -> None:
        self.fenced = exc
        for _cpl, fut in self.waiting:
            if not fut.done():
                fut.set_exception(exc)
        self.waiting.clear()

    async def close(self) -> None:
        for _cpl, fut in self.waiting:
            if not fut.done():
                fut.set_exception(ConnectionError("writer closed"))
