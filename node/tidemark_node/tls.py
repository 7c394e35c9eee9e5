"""TLS for the node: its server certificate, reloaded when the files change (rotation
without a restart), and the trust its own calls to peers use."""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Any

import aiohttp
import structlog

from .state import Settings

log = structlog.get_logger("tidemark.node.tls")

RELOAD_INTERVAL = 5.0


def _stamp(*paths: str) -> tuple[float, ...]:
    return tuple(os.stat(p).st_mtime_ns for p in paths)


class ServerTLS:
    """The listening socket's context; `reload()` swaps in changed certificate files."""

    def __init__(self, cert: str, key: str) -> None:
        self.cert, self.key = cert, key
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.load_cert_chain(cert, key)
        self.stamp = _stamp(cert, key)

    def reload(self) -> bool:
        """Load the files again if they changed; a pair that does not load (half
        written, mismatched) leaves the serving certificate as it was."""
        try:
            stamp = _stamp(self.cert, self.key)
            if stamp == self.stamp:
                return False
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(self.cert, self.key)  # check
            self.context.load_cert_chain(self.cert, self.key)  # new handshakes present it
        except (OSError, ssl.SSLError) as exc:
            log.warning("tls_reload_failed", cert=self.cert, error=str(exc))
            return False
        self.stamp = stamp
        log.info("tls_reloaded", cert=self.cert)
        return True

    async def reload_loop(self, interval: float = RELOAD_INTERVAL) -> None:
        while True:
            await asyncio.sleep(interval)
            self.reload()


def peer_trust(ca_file: str, check_hostname: bool = True) -> ssl.SSLContext:
    """Peers are verified against the fleet's CA: with their address in their certificate
    (verify-full, the playground), or the chain alone (verify-ca: on Kubernetes peers are
    dialled by pod IPs that the cluster's certificate cannot name)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    if not check_hostname:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def peer_session(settings: Settings, **kwargs: Any) -> aiohttp.ClientSession:
    """A session for calls to peers: the peer token and, with TLS, the fleet's CA."""
    connector = aiohttp.TCPConnector(ssl=settings.peer_tls if settings.peer_tls is not None else True)
    return aiohttp.ClientSession(headers=settings.peer_headers, connector=connector, **kwargs)
