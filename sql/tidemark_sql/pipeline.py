"""Commit pipelining: answer a client only once VDL has passed what it may have seen.

The SQLite thread submits each transaction's mini-transaction and goes on with the
next transaction without waiting for its quorum. The first commit that fails poisons
the pipeline: every later transaction may have read its effects, so none of them is
ever answered, and the instance accepts no more work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from tidemark_compute.writer import Writer
from tidemark_protocol.writer_core import Change

log = structlog.get_logger("tidemark.sql.pipeline")


class InstanceFailed(Exception):
    """The instance stopped: a commit failed or the writer was fenced."""


class Pipeline:
    """What sessions need of an instance: whether it still serves, and when an answer
    may go out. A replica commits nothing, so its answers never wait."""

    def __init__(self) -> None:
        self.failed: InstanceFailed | None = None
        self.last_cpl = 0  # the newest CPL submitted (what SQLite has seen)
        self.lease: Callable[[], bool] | None = None  # False once a newer writer took over

    def check(self) -> None:
        if self.failed is None and self.lease is not None and not self.lease():
            self.fail("superseded: a newer writer holds the volume (lease)")
        if self.failed is not None:
            raise self.failed

    def fail(self, reason: str) -> None:
        if self.failed is None:
            log.error("instance_failed", reason=reason)
            self.failed = InstanceFailed(reason)

    async def wait(self, cpl: int) -> None:
        self.check()


class CommitPipeline(Pipeline):
    def __init__(self, writer: Writer) -> None:
        super().__init__()
        self.writer = writer
        self.last_cpl = writer.vdl
        self._pending: dict[int, asyncio.Future[int]] = {}

    def check(self) -> None:
        if self.failed is None and self.writer.fenced is not None:
            self.fail(f"writer fenced: {self.writer.fenced}")
        super().check()

    async def submit(self, changes: list[Change]) -> int:
        """Ship one transaction's redo; returns its CPL without waiting for quorum."""
        self.check()
        try:
            cpl, fut = await self.writer.submit(changes)
        except Exception as exc:
            self.fail(f"commit refused: {exc!r}")
            raise self.failed from exc  # type: ignore[misc]
        self.last_cpl = cpl
        self._pending[cpl] = fut
        fut.add_done_callback(lambda f, cpl=cpl: self._done(cpl, f))
        return cpl

    def _done(self, cpl: int, fut: asyncio.Future[int]) -> None:
        self._pending.pop(cpl, None)
        if fut.cancelled():
            self.fail(f"commit {cpl} cancelled")
        elif fut.exception() is not None:
            self.fail(f"commit {cpl} failed: {fut.exception()!r}")

    async def wait(self, cpl: int) -> None:
        """Return once VDL ≥ cpl; raise if the instance failed before that."""
        while True:
            if cpl <= self.writer.vdl:
                return  # durable, and so is everything before it
            self.check()
            fut = self._pending.get(cpl) or self._first_pending_at_or_above(cpl)
            if fut is None:
                self.check()
                raise InstanceFailed(f"commit {cpl} is neither durable nor pending")
            try:
                await asyncio.shield(fut)
            except Exception as exc:
                self.fail(f"commit failed: {exc!r}")
                raise self.failed from exc  # type: ignore[misc]

    def _first_pending_at_or_above(self, cpl: int) -> asyncio.Future[int] | None:
        above = [c for c in self._pending if c >= cpl]
        return self._pending[min(above)] if above else None
