"""A read replica instance: SQLite, read-only, over a Reader (tidemark_compute.reader),
served on the PostgreSQL wire protocol. It never opens the volume as a writer; every
write is refused with 25006 (read_only_sql_transaction)."""

from __future__ import annotations

import asyncio
import ssl

import structlog

from tidemark_compute.reader import Reader

from .endpoint import Endpoint
from .engine import Engine
from .pipeline import Pipeline
from .replica_store import ReplicaPageStore
from .scram import Verifier
from .server import Server

log = structlog.get_logger("tidemark.sql.replica")


class ReplicaInstance(Endpoint):
    def __init__(self, reader: Reader, store: ReplicaPageStore, engine: Engine, server: Server) -> None:
        self.reader = reader
        self.store = store
        super().__init__(engine, server, self.status)

    @classmethod
    async def start(
        cls,
        reader: Reader,
        host: str = "127.0.0.1",
        port: int = 5432,
        credentials: dict[str, Verifier] | None = None,
        insecure_no_auth: bool = False,
        cache_size: int | None = None,
        max_connections: int = 64,
        admin_port: int | None = None,
        admin_host: str | None = None,
        tls: ssl.SSLContext | None = None,
        require_tls: bool = False,
        admin_tls: ssl.SSLContext | None = None,
    ) -> ReplicaInstance:
        """The reader must be following its writer's feed (Reader.start) already."""
        store = ReplicaPageStore(reader, asyncio.get_running_loop())
        engine = Engine(store, cache_size)
        server = Server(engine, Pipeline(), credentials or {}, insecure_no_auth, max_connections,
                        tls=tls, require_tls=require_tls)
        instance = cls(reader, store, engine, server)
        await instance.serve(host, port, admin_port, admin_host, admin_tls)
        log.info("sql_replica_up", address=instance.address, read_point=store.read_point, admin=instance.admin.url)
        return instance

    def status(self) -> dict:
        return {"role": "replica", "vdl": self.reader.vdl, "read_point": self.store.read_point,
                "volume_epoch": self.reader.epoch, "feed_connected": self.reader.connected,
                "lag_ms": round(self.reader.lag_ms, 2), "page_reads": self.store.page_reads,
                "read_point_moves": self.store.moves, "serving": self.pipeline.failed is None}

    async def close(self) -> None:
        await super().close()
        await self.reader.close()
