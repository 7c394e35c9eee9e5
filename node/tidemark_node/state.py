"""The node's shared state: identity, store, hosted segments, committer, telemetry,
the scrubber's counters and what the backup uploader shares with intake and GC."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tidemark_protocol.keys import node_key
from tidemark_protocol.node_auth import Verifier

from .commit import Committer
from .scrubber import Scrubber
from .segments import Segment
from .store import Store
from .telemetry import Telemetry
from .uploader_state import UploaderStatus


@dataclass
class Settings:
    name: str
    zone: str
    data: str
    gossip_interval: float = 1.0
    materialize_interval: float = 0.5
    gc_interval: float = 5.0
    gc_log_tail: int = 100_000  # keep this many LSNs of log below SCL for lagging peers
    # Log a fellow member still lacks stays while that member's SCL moved in this many
    # seconds (a node back from an outage catches up by gossip; the LSN tail alone is
    # useless after a new writer's epoch jumps the LSNs by its allocation window).
    gc_peer_hold: float = 600.0
    materialize_chunk: int = 20_000  # records per materialization step (at most)
    materialize_min_batch: int = 5000  # backlog that triggers materialization before lingering
    gossip_chunk: int = 5000  # records per gossip pull
    scrub_interval: float = 300.0  # seconds between scrub passes (0: no scrubbing)
    backup: str | None = None  # backup target URL (s3://bucket/prefix or file:///path)
    backup_options: dict = field(default_factory=dict)  # uploader_state.BackupSettings
    # Serve the fault-injection endpoints (faults.py): only `--enable-fault-injection`
    # turns this on (tests and `tidemark chaos corrupt`), never the environment.
    fault_injection: bool = False
    trace_console: bool = False  # export trace spans to stderr (`--trace-console`)
    # Tokens this node checks (None: `--insecure-no-auth`), and the header it presents
    # to its peers (gossip, scrub, hydration, the uploader's status round).
    auth: Verifier | None = None
    peer_headers: dict[str, str] = field(default_factory=dict)
    peer_tls: ssl.SSLContext | None = None  # trust for https peers (`--tls-ca`)
    server_tls: Any = None  # tls.ServerTLS (`--tls-cert/--tls-key`), reloaded as the files change


@dataclass(slots=True)
class NodeState:
    settings: Settings
    store: Store
    telemetry: Telemetry
    committer: Committer
    scrubber: Scrubber
    generation: int = 0
    segments: dict[int, Segment] = field(default_factory=dict)
    peers: dict[str, str] = field(default_factory=dict)  # node-level peer directory
    ready: bool = False
    load_error: str | None = None
    sockets: set[web.WebSocketResponse] = field(default_factory=set)  # open log streams
    # Continuous backup (uploader.py), None while no uploader runs:
    # VDL marks intake received (time -> LSN), uploaded and popped by the uploader;
    backup_marks: deque[tuple[int, int]] | None = None
    # per PG, the bucket's coverage end: log GC keeps every record above it (None once
    # the uploader is fenced: a fenced uploader holds nothing back);
    backup_holds: dict[int, int] | None = None
    backup_status: UploaderStatus | None = None  # shown in /v1/status
    # (pg, member) -> (its SCL as gossip last saw it, monotonic time that SCL last moved)
    peer_progress: dict[tuple[int, str], tuple[int, float]] = field(default_factory=dict)
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
TASKS = web.AppKey("tasks", list[asyncio.Task])  # background tasks, cancelled on shutdown
