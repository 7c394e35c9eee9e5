"""An instance's admin endpoint (loopback HTTP in the playground; https on a pod's address
on Kubernetes, with the instance's certificate): /v1/status (JSON), /metrics (Prometheus
text), /readyz (a readiness probe: 200 while serving, for a replica also while its lag is
at most `max_lag_ms`), and on a writer the replica feed /v1/feed (WebSocket)."""

from __future__ import annotations

import ssl
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
        self.app.router.add_get("/readyz", self._ready)
        self.max_lag_ms: float | None = None
        if feed is not None:
            self.app.router.add_get("/v1/feed", feed)
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def _status(self, _request: web.Request) -> web.Response:
        return web.json_response(self.status())

    def ready(self) -> tuple[bool, str]:
        st = self.status()
        if not st.get("serving"):
            return False, "not serving"
        if st.get("role") == "replica":
            if not st.get("feed_connected"):
                return False, "not following the writer's feed"
            if self.max_lag_ms is not None and float(st.get("lag_ms") or 0) > self.max_lag_ms:
                return False, f"lag {st.get('lag_ms')} ms > {self.max_lag_ms} ms"
        return True, "ok"

    async def _ready(self, _request: web.Request) -> web.Response:
        ok, why = self.ready()
        return web.Response(status=200 if ok else 503, text=why)

    async def _metrics(self, _request: web.Request) -> web.Response:
        body, ctype = telemetry.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def start(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> str:
        """Serve on HOST:PORT (https with TLS); the URL, whose scheme the feed URL follows."""
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=tls)
        await site.start()
        bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
        self.url = f"{'https' if tls is not None else 'http'}://{bound[0]}:{bound[1]}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
