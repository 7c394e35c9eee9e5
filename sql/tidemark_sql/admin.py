"""An instance's admin endpoint (loopback HTTP): /v1/status (JSON), /metrics
(Prometheus text), and on a writer the replica feed /v1/feed (WebSocket)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from . import telemetry

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Admin:
    def __init__(self, status: Callable[[], dict], feed: Handler | None = None) -> None:
        self.status = status
        self.app = web.Application()
        self.app.router.add_get("/v1/status", self._status)
        self.app.router.add_get("/metrics", self._metrics)
        if feed is not None:
            self.app.router.add_get("/v1/feed", feed)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.status())

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, ctype = telemetry.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def start(self, host: str, port: int) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"http://{bound[0]}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
