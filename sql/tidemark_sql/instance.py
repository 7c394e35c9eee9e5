"""A writer instance: SQLite over a Writer, served on the PostgreSQL wire protocol, with
the replica feed and status on its admin endpoint.

The caller opens the Writer (recovery + seal) and hands it over; the instance owns it
from then on and closes it.
"""

from __future__ import annotations

import asyncio
import ssl

import structlog

from tidemark_compute.feed_server import ChangeFeed
from tidemark_compute.writer import Writer

from .endpoint import Endpoint
from .engine import Engine
from .pagestore import PageStore
from .pipeline import CommitPipeline
from .scram import Verifier
from .server import Server

log = structlog.get_logger("tidemark.sql.instance")


class Instance(Endpoint):
    def __init__(self, writer: Writer, engine: Engine, pipeline: CommitPipeline, server: Server,
                 feed_token: str | None = None) -> None:
        self.writer = writer
        self.feed = ChangeFeed(writer, feed_token)  # before the first commit: it tracks every page from here on
        super().__init__(engine, server, self.status, self.feed.handle)
        self.pipeline: CommitPipeline = pipeline
        self._watch: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        writer: Writer,
        host: str = "127.0.0.1",
        port: int = 5432,
        credentials: dict[str, Verifier] | None = None,
        insecure_no_auth: bool = False,
        cache_size: int | None = None,
        multi_range: bool = True,
        max_connections: int = 64,
        max_message: int = 1 << 20,
        lock_timeout: float = 30.0,
        idle_in_transaction_timeout: float = 60.0,
        admin_port: int | None = None,
        admin_host: str | None = None,
        feed_token: str | None = None,
        tls: ssl.SSLContext | None = None,
        require_tls: bool = False,
        admin_tls: ssl.SSLContext | None = None,
    ) -> Instance:
        """`admin_port` None: no admin endpoint (no replicas can follow). `feed_token`
        None: the feed serves loopback replicas only; else any replica with the token."""
        pipeline = CommitPipeline(writer)
        store = PageStore(writer, asyncio.get_running_loop(), pipeline, multi_range=multi_range)
        engine = Engine(store, cache_size)
        server = Server(engine, pipeline, credentials or {}, insecure_no_auth, max_connections, max_message,
                        lock_timeout, idle_in_transaction_timeout, tls=tls, require_tls=require_tls)
        instance = cls(writer, engine, pipeline, server, feed_token)
        await instance.serve(host, port, admin_port, admin_host, admin_tls)
        instance._watch = asyncio.create_task(instance._watch_fence())
        log.info("sql_instance_up", address=instance.address, pages=store.pages, vdl=writer.vdl,
                 admin=instance.admin.url)
        return instance

    def status(self) -> dict:
        return {"role": "writer", "vdl": self.writer.vdl, "volume_epoch": self.writer.core.volume_epoch,
                "pgmrpl": self.writer.pgmrpl(), "replicas": self.feed.replicas, "lag_ms": 0,
                "serving": self.pipeline.failed is None,
                "failed": None if self.pipeline.failed is None else str(self.pipeline.failed)}

    async def _watch_fence(self) -> None:
        """A fenced or superseded writer fails the pipeline at once, not at the next statement."""
        while self.pipeline.failed is None:
            try:
                self.pipeline.check()
            except Exception:  # noqa: BLE001 - check() recorded why
                return
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await super().close()
        await self.writer.close()
