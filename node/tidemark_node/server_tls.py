"""A server's TLS certificate, reloaded when its files change (rotation without a
restart: a renewed Kubernetes Secret's files are swapped by the kubelet). Light to
import (no node internals): the storage nodes and the SQL instances both serve with it."""

from __future__ import annotations

import asyncio
import os
import ssl

import structlog

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


