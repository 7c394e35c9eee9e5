"""Shared fixtures for tests that run real processes on loopback.

Generic on purpose: start/stop storage-node processes on free 127.x.y.z addresses with
temporary data dirs, wait (bounded) for /readyz, and always kill them on teardown.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidemark_compute.topology import load_node_credentials, write_node_key
from tidemark_protocol.node_auth import Role

# Distinct loopback addresses per node, so tests never fight over a port on one IP and
# a lingering socket from a previous test cannot be mistaken for a new node.
_addresses = itertools.count(0)


def loopback_address() -> str:
    i = next(_addresses)
    return f"127.{60 + (i // 62500) % 60}.{(i // 250) % 250 + 1}.{i % 250 + 2}"


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class NodeProcess:
    """One `tidemark node run` process; restartable with the same data dir and address."""

    name: str
    zone: str
    host: str
    port: int
    data: Path
    extra_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    key_file: Path | None = None  # the fleet's node key (None: --insecure-no-auth)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/v1/log"

    @property
    def log_path(self) -> Path:
        return self.data.parent / f"{self.name}.log"

    def start(self) -> NodeProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [
            sys.executable, "-m", "tidemark_cli.main", "node", "run",
            "--name", self.name, "--zone", self.zone, "--host", self.host,
            "--port", str(self.port), "--data", str(self.data), *self.extra_args,
            *(["--auth-key-file", str(self.key_file)] if self.key_file else ["--insecure-no-auth"]),
        ]  # fmt: skip
        self.starts += 1
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                cmd, stdout=logf, stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                start_new_session=True,
            )
        finally:
            logf.close()
        return self

    def wait_ready(self, timeout: float = 45.0) -> NodeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError(f"node {self.name} exited early:\n{self.log_tail()}")
            try:
                status, _ = http_get(f"{self.url}/readyz", timeout=1.0)
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"node {self.name} not ready in {timeout}s:\n{self.log_tail()}")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (clean shutdown), escalating to SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL: a crash, nothing flushed that was not already synced."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


NodeFactory = Callable[..., NodeProcess]


@pytest.fixture
def node_factory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[NodeFactory]:
    """`node_factory(name, zone="z1", extra_args=[...], env={...}, start=True)` starts a
    node (waiting for /readyz) and returns its NodeProcess; all are killed at teardown."""
    nodes: list[NodeProcess] = []

    def make(
        name: str,
        zone: str = "z1",
        extra_args: list[str] | None = None,
        env: dict[str, str] | None = None,
        start: bool = True,
    ) -> NodeProcess:
        host = loopback_address()
        data = tmp_path / name / "data"
        data.parent.mkdir(parents=True, exist_ok=True)
        node = NodeProcess(name, zone, host, free_port(host), data, list(extra_args or []), dict(env or {}),
                           write_node_key(tmp_path))
        nodes.append(node)
        if start:
            node.start().wait_ready()
        return node

    yield make
    failed = getattr(request.node, "rep_call", None)
    for node in nodes:
        node.kill()
        if failed is not None and failed.failed:
            print(f"--- {node.name} log tail ---\n{node.log_tail()}")


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    # Lets fixtures see whether the test body failed (to print node logs only then).
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


# -- talking to a node (HTTP + the log WebSocket) -----------------------------------------
class LogChain:
    """Builds one PG's records with correct back-links (prev in PG, prev of page)."""

    def __init__(self, pg: int) -> None:
        self.pg = pg
        self.last = 0
        self.page_last: dict[int, int] = {}

    def record(self, lsn: int, page: int, payload: bytes, cpl: bool = True, full: bool = False):
        from tidemark_protocol.records import Record, RecordFlags

        flags = (RecordFlags.CPL if cpl else RecordFlags.NONE) | (
            RecordFlags.FULL_IMAGE if full else RecordFlags.NONE
        )
        rec = Record(lsn, self.pg, page, self.last, self.page_last.get(page, 0), flags, payload)
        self.last = lsn
        self.page_last[page] = lsn
        return rec


def frame(seq: int, groups: list[tuple[int, int, list]], volume_epoch: int = 1,
          vdl: int = 0, pgmrpl: int = 0) -> bytes:
    """A write batch frame; groups are (pg, membership_epoch, records)."""
    from tidemark_protocol.frames import encode_batch_with_encoded_records

    return encode_batch_with_encoded_records(
        seq, volume_epoch, vdl, pgmrpl, [(pg, me, [r.encode() for r in recs]) for pg, me, recs in groups]
    )


class LogStream:
    def __init__(self, ws) -> None:
        self.ws = ws

    async def send(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    async def recv(self, timeout: float = 20.0) -> dict:
        import asyncio

        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type.name == "TEXT", f"expected a text ack, got {msg.type}: {msg.data!r}"
        import json

        return json.loads(msg.data)

    async def call(self, data: bytes, timeout: float = 20.0) -> dict:
        await self.send(data)
        return await self.recv(timeout)

    async def close(self) -> None:
        await self.ws.close()


class NodeClient:
    def __init__(self, session, node: NodeProcess) -> None:
        self.session = session
        self.node = node

    @property
    def url(self) -> str:
        return self.node.url

    async def request(self, method: str, path: str, **kw) -> tuple[int, bytes, dict]:
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=kw.pop("timeout", 20))
        async with self.session.request(method, self.url + path, timeout=timeout, **kw) as resp:
            return resp.status, await resp.read(), dict(resp.headers)

    async def json(self, method: str, path: str, expect: int | None = 200, **kw):
        import json

        status, body, _ = await self.request(method, path, **kw)
        if expect is not None:
            assert status == expect, f"{method} {path}: {status} {body[:300]!r}"
        return json.loads(body) if body else None

    async def put_segment(self, pg: int, members: list[str], peers: dict[str, str] | None = None,
                          volume_epoch: int = 1, membership_epoch: int = 1,
                          layout: dict | None = None) -> dict:
        body = {
            "layout": layout or {"pg_count": 4, "pages_per_pg": 16, "page_size": 256},
            "membership": {"epoch": membership_epoch, "members": members, "next_members": None},
            "peers": peers or {},
            "volume_epoch": volume_epoch,
        }
        return await self.json("PUT", f"/v1/segments/{pg}", json=body)

    async def status(self) -> dict:
        return await self.json("GET", "/v1/status")

    async def segment(self, pg: int) -> dict:
        for seg in (await self.status())["segments"]:
            if seg["pg"] == pg:
                return seg
        raise AssertionError(f"pg {pg} not on {self.node.name}")

    async def wait_segment(self, pg: int, pred, timeout: float = 30.0, what: str = "") -> dict:
        import asyncio

        deadline = time.monotonic() + timeout
        seg: dict = {}
        while time.monotonic() < deadline:
            try:
                seg = await self.segment(pg)
                if pred(seg):
                    return seg
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"{self.node.name} pg {pg}: {what} not reached in {timeout}s: {seg}")

    async def open_log(self) -> LogStream:
        return LogStream(await self.session.ws_connect(self.node.ws_url, max_msg_size=0))


@pytest.fixture
async def node_client(tmp_path: Path):
    """`node_client(node)` → NodeClient sharing one aiohttp session (closed at teardown),
    presenting the admin token of node_factory's fleet key."""
    import aiohttp

    admin = load_node_credentials(write_node_key(tmp_path).parent).headers(Role.ADMIN)
    async with aiohttp.ClientSession(headers=admin) as session:
        yield lambda node: NodeClient(session, node)


@pytest.fixture
def wire():
    """Builders for log traffic: `wire.LogChain(pg)`, `wire.frame(seq, groups, ...)`."""
    from types import SimpleNamespace

    return SimpleNamespace(LogChain=LogChain, frame=frame)
