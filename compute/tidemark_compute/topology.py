"""What a writer needs to know about a volume: layout, nodes and PG memberships."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.node_auth import BadToken, NodeCredentials, Role, headers_for, parse_keys
from tidemark_protocol.quorum import Membership


@dataclass(slots=True)
class Topology:
    layout: VolumeLayout
    nodes: dict[str, str]  # node name -> base URL
    memberships: dict[int, Membership]
    volume_epoch: int = 0  # the last epoch a writer sealed the volume with
    # The node tokens this process presents (never saved with the topology; None: the
    # nodes run with --insecure-no-auth).
    credentials: NodeCredentials | None = field(default=None, repr=False, compare=False)
    # Trust for the nodes' https URLs (the fleet's CA; None: the system's, or plain http).
    tls: ssl.SSLContext | None = field(default=None, repr=False, compare=False)

    def headers(self, role: Role) -> dict[str, str]:
        """Headers for node calls in `role`."""
        return headers_for(self.credentials, role)

    def session(self, role: Role | None, limit: int = 100, **kwargs: Any) -> aiohttp.ClientSession:
        """An HTTP session for node calls in `role` (None: no token on every request):
        its token, the fleet's CA. Call it on the event loop."""
        connector = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else True, limit=limit)
        headers = self.headers(role) if role is not None else {}
        return aiohttp.ClientSession(headers=headers, connector=connector, **kwargs)

    def pgs_of(self, node: str) -> list[int]:
        return [pg for pg, m in self.memberships.items() if node in m.all_members]

    def to_json(self) -> dict:
        return {
            "layout": self.layout.to_json(),
            "nodes": dict(self.nodes),
            "memberships": {str(pg): m.to_json() for pg, m in self.memberships.items()},
            "volume_epoch": self.volume_epoch,
        }

    @classmethod
    def from_json(cls, data: dict) -> Topology:
        return cls(
            VolumeLayout.from_json(data["layout"]),
            dict(data["nodes"]),
            {int(pg): Membership.from_json(m) for pg, m in data["memberships"].items()},
            int(data.get("volume_epoch", 0)),
        )


TOPOLOGY_FILE = "topology.json"
NODE_KEY_FILE = "node-auth.key"  # the fleet's node key (node_auth), mode 0600
NODE_TOKEN_SUFFIX = ".token"  # a role's token alone: `writer.token` (a mounted Secret on Kubernetes)
TLS_DIR = "tls"  # the fleet's CA and node certificates (playground/tls.py)
TLS_CA_FILE = "ca.crt"


def client_tls(ca_file: Path | str) -> ssl.SSLContext:
    """Verify servers against this CA only (hostname/IP checked: verify-full)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca_file))


def client_tls_verify_ca(ca_file: Path | str | None = None, ca_pem: str | None = None) -> ssl.SSLContext:
    """Verify servers against this CA only, without checking the host name (verify-ca):
    on Kubernetes nodes are dialled by pod IP, which no certificate issued before the
    pod existed can name; the CA is the cluster's own, so its chain is the proof."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=str(ca_file) if ca_file is not None else None, cadata=ca_pem)
    context.check_hostname = False  # before verify_mode: the chain is still required
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def load_fleet_tls(directory: Path) -> ssl.SSLContext | None:
    ca = directory / TLS_DIR / TLS_CA_FILE
    return client_tls(ca) if ca.exists() else None


def write_node_key(directory: Path) -> Path:
    """A new fleet's node key (kept if one is there: a fleet keeps its key)."""
    path = directory / NODE_KEY_FILE
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return path


def load_node_credentials(directory: Path) -> NodeCredentials | None:
    """Every role's token, from the fleet's key in `directory` (None: the fleet has none)."""
    path = directory / NODE_KEY_FILE
    if not path.exists():
        return None
    return NodeCredentials.from_keys(parse_keys(path.read_text()))


def token_file(role: Role) -> str:
    return role.value + NODE_TOKEN_SUFFIX


def load_token_credentials(directory: Path) -> NodeCredentials:
    """The tokens in DIRECTORY's `ROLE.token` files (a process that must not hold the key);
    FileNotFoundError when it holds none."""
    tokens = [(directory / token_file(r)).read_text() for r in Role if (directory / token_file(r)).is_file()]
    if not tokens:
        raise FileNotFoundError(f"no node token ({', '.join(token_file(r) for r in Role)}) in {directory}")
    try:
        return NodeCredentials.from_tokens(tokens)
    except BadToken as exc:
        raise BadToken(f"{directory}: {exc}") from None


def load_topology(directory: Path) -> Topology:
    path = directory / TOPOLOGY_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: start a fleet with `tidemark playground up`")
    topology = Topology.from_json(json.loads(path.read_text()))
    topology.credentials = load_node_credentials(directory)
    topology.tls = load_fleet_tls(directory)
    return topology


@contextmanager
def topology_lock(directory: Path) -> Iterator[None]:
    """Serializes read-modify-write of topology.json across processes (the writer
    records its epoch, the supervisor records membership changes)."""
    with (directory / (TOPOLOGY_FILE + ".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record_volume_epoch(directory: Path, epoch: int) -> None:
    """Store the writer's new volume epoch without touching anything else."""
    with topology_lock(directory):
        topology = load_topology(directory)
        topology.volume_epoch = max(topology.volume_epoch, epoch)
        save_topology(directory, topology)


def save_topology(directory: Path, topology: Topology) -> None:
    """Atomic replace, so a crash never leaves a half-written topology behind."""
    path = directory / TOPOLOGY_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(topology.to_json(), indent=2))
    os.replace(tmp, path)


def membership_source(directory: Path) -> Callable[[], Awaitable[Topology]]:
    """A Writer's view of the placement kept in `directory` (the playground's)."""

    async def load() -> Topology:
        return load_topology(directory)

    return load
