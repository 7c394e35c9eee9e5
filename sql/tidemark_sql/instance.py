"""A database instance: SQLite over a Writer, served on the PostgreSQL wire protocol.

The caller opens the Writer (recovery + seal) and hands it over; the instance owns it
from then on and closes it. Only the writer role exists yet (no replicas).
"""

from __future__ import annotations

import asyncio

import structlog

from tidemark_compute.writer import Writer

from . import catalog
from .engine import Engine
from .pagestore import PageStore
from .pipeline import CommitPipeline
from .scram import Verifier
from .server import Server

log = structlog.get_logger("tidemark.sql.instance")


class Instance:
    def __init__(self, writer: Writer, engine: Engine, pipeline: CommitPipeline, server: Server) -> None:
        self.writer = writer
        self.engine = engine
        self.pipeline = pipeline
        self.server = server
        self.address: tuple[str, int] | None = None
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
    ) -> Instance:
        pipeline = CommitPipeline(writer)
        store = PageStore(writer, asyncio.get_running_loop(), pipeline, multi_range=multi_range)
        engine = Engine(store, cache_size)
        server = Server(engine, pipeline, credentials or {}, insecure_no_auth, max_connections, max_message,
                        lock_timeout, idle_in_transaction_timeout)
        await engine.run(engine.open, lambda conn: catalog.install(conn, server.current_setting))
        instance = cls(writer, engine, pipeline, server)
        instance.address = await server.start(host, port)
        instance._watch = asyncio.create_task(instance._watch_fence())
        log.info("sql_instance_up", address=instance.address, pages=store.pages, vdl=writer.vdl)
        return instance

    @property
    def dsn(self) -> str:
        assert self.address is not None
        return f"postgresql://{self.address[0]}:{self.address[1]}/tidemark"

    async def _watch_fence(self) -> None:
        """A fenced writer fails the pipeline at once, not at the next statement."""
        while self.pipeline.failed is None:
            if self.writer.fenced is not None:
                self.pipeline.fail(f"writer fenced: {self.writer.fenced}")
                return
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        await self.server.close()
        await self.engine.shutdown()
        await self.writer.close()
