"""TLS for the node: its server certificate (server_tls.ServerTLS, reloaded when the files
change: rotation without a restart), and the trust its own calls to peers use."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from .state import Settings


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
