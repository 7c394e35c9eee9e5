"""HTTP/JSON calls to the storage nodes' API (/v1/status, /v1/segments/...), async over
aiohttp: the operator's only client of the nodes. Status reads of all pods go out
concurrently, so one slow pod does not stretch a pass by its timeout per pod.

A cluster's calls go through `for_cluster(credentials, tls)`: a view sharing the process's
session that presents the cluster's admin token (each AuroraCluster has its own key) and
verifies the nodes' certificates against the cluster's own CA (verify-ca, nodetls.py)."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from tidemark_protocol.node_auth import NodeCredentials, Role, headers_for

from .status import PodObs

STATUS_TIMEOUT = 1.5  # seconds: a pod that does not answer in time counts as down this pass
WRITE_TIMEOUT = 5.0


class NodeError(Exception):
    """A node call that failed: unreachable, timed out, an HTTP error, or not JSON."""


class _Sessions:
    """The process's one HTTP session, shared by every view of the NodeClient."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class NodeClient:
    """One per operator process, used on kopf's event loop. Connections are not kept
    alive: a storage pod restarted at the same address must not meet a stale one."""

    def __init__(self, status_timeout: float = STATUS_TIMEOUT, write_timeout: float = WRITE_TIMEOUT,
                 credentials: NodeCredentials | None = None, sessions: _Sessions | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        self.status_timeout = status_timeout
        self.write_timeout = max(write_timeout, status_timeout)
        self.credentials = credentials  # None: no token (the instances' admin endpoints)
        self.tls = tls  # None: the system's trust (https) or none needed (http)
        self.refused = False  # a node answered 401 to this view (its credentials are stale)
        self._sessions = sessions or _Sessions()

    def for_cluster(self, credentials: NodeCredentials | None, tls: ssl.SSLContext | None = None) -> NodeClient:
        """A view presenting CREDENTIALS' admin token (None: none, for the instances' admin
        endpoints) and trusting TLS's CA, on this client's session."""
        return NodeClient(self.status_timeout, self.write_timeout, credentials, self._sessions, tls)

    async def close(self) -> None:
        await self._sessions.close()

    async def call(self, method: str, url: str, body: Any = None, timeout: float | None = None) -> Any:
        """The JSON answer (None for an empty body); NodeError on any failure."""
        try:
            async with self._sessions.get().request(
                    method, url, json=body, headers=headers_for(self.credentials, Role.ADMIN),
                    ssl=self.tls if self.tls is not None else True,
                    timeout=aiohttp.ClientTimeout(total=timeout or self.write_timeout)) as resp:
                raw = await resp.read()
                self.refused |= resp.status == 401
                if resp.status >= 400:
                    raise NodeError(f"HTTP {resp.status} {resp.reason}: {raw[:200].decode(errors='replace')}")
                return json.loads(raw or b"null")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise NodeError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def status(self, pod: PodObs) -> dict[str, Any] | None:
        """The pod's /v1/status (None: not running or not answering)."""
        if not pod.running:
            return None
        try:
            st = await self.call("GET", f"{pod.url}/v1/status", timeout=self.status_timeout)
        except NodeError:
            return None
        return st if isinstance(st, dict) else None

    async def statuses(self, pods: Sequence[PodObs]) -> dict[str, dict[str, Any] | None]:
        results = await asyncio.gather(*(self.status(p) for p in pods))
        return {p.name: st for p, st in zip(pods, results, strict=True)}

    async def put_segment(self, url: str, pg: int, body: Mapping[str, Any]) -> None:
        """Create the segment or update its membership/peers (idempotent)."""
        await self.call("PUT", f"{url}/v1/segments/{pg}", dict(body))

    async def hydrate(self, url: str, pg: int, sources: Mapping[str, str], bandwidth: int) -> None:
        """(Re)start rebuilding the segment from SOURCES (a no-op once done)."""
        await self.call("POST", f"{url}/v1/segments/{pg}/hydrate",
                        {"sources": dict(sources), "bandwidth_bytes_per_s": bandwidth})

    async def delete_segment(self, url: str, pg: int) -> None:
        await self.call("DELETE", f"{url}/v1/segments/{pg}")
