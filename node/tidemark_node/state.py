"""The node's shared state: identity, store, hosted segments, committer, telemetry."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .commit import Committer
from .segments import Segment
from .store import Store, node_key
from .telemetry import Telemetry


@dataclass
class Settings:
    name: str
    zone: str
    data: str
    gossip_interval: float = 1.0
    materialize_interval: float = 0.5
    gc_interval: float = 5.0
    gc_log_tail: int = 100_000  # keep this many LSNs of log below SCL for lagging peers
    materialize_chunk: int = 20_000  # records per materialization step (at most)
    materialize_min_batch: int = 5000  # backlog that triggers materialization before lingering
    gossip_chunk: int = 5000  # records per gossip pull
    scrub_interval: float = 300.0  # seconds between scrub passes (0: no scrubbing)
    backup: str | None = None  # backup target URL (s3://bucket/prefix or file:///path)
    backup_options: dict = field(default_factory=dict)  # tidemark_backup.uploader.BackupSettings


@dataclass
class NodeState:
    settings: Settings
    store: Store
    telemetry: Telemetry
    committer: Committer
    generation: int = 0
    segments: dict[int, Segment] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # node-level peer directory
    ready: bool = False
    load_error: str | None = None
    sockets: set = field(default_factory=set)  # open log streams, closed on shutdown
    scrubber: Any = None  # scrub.Scrubber, created when the node starts
    # Reads and background scans run here so the event loop never blocks on RocksDB.
    reader: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="read")
    )

    @property
    def name(self) -> str:
        return self.settings.name

    def peer_url(self, seg: Segment, name: str) -> str | None:
        return seg.peers.get(name) or self.peers.get(name)

    def peers_bytes(self) -> bytes:
        return json.dumps(self.peers).encode()

    @staticmethod
    def peers_key() -> bytes:
        return node_key("peers")


STATE = web.AppKey("state", NodeState)
