"""What a writer and a replica instance share: SQLite (the engine, with the catalog
shims), the PostgreSQL wire server and the admin endpoint, started and stopped in order."""

from __future__ import annotations

import ssl
from collections.abc import Callable

from . import catalog
from .admin import Admin, Handler
from .engine import Engine
from .server import Server


class Endpoint:
    def __init__(self, engine: Engine, server: Server, status: Callable[[], dict], feed: Handler | None = None) -> None:
        self.engine = engine
        self.server = server
        self.pipeline = server.pipeline
        self.admin = Admin(status, feed)
        self.address: tuple[str, int] | None = None

    async def serve(self, host: str, port: int, admin_port: int | None, admin_host: str | None = None,
                    admin_tls: ssl.SSLContext | None = None) -> None:
        """Open SQLite, then the admin endpoint (`admin_port` None: none; on `admin_host`,
        default HOST; https with ADMIN_TLS), then take clients."""
        await self.engine.run(self.engine.open, lambda conn: catalog.install(conn, self.server.current_setting))
        if admin_port is not None:
            await self.admin.start(admin_host or host, admin_port, admin_tls)
        self.address = await self.server.start(host, port)

    @property
    def dsn(self) -> str:
        assert self.address is not None
        return f"postgresql://{self.address[0]}:{self.address[1]}/tidemark"

    async def close(self) -> None:
        await self.server.close()
        await self.admin.close()
        await self.engine.shutdown()
