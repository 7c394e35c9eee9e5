"""TLS on the playground's node hops (issue #14): every node serves https with a
certificate of the fleet's own CA; a client that trusts another CA (a man in the middle
with a certificate for the right address) is refused and the writer keeps writing
through the other nodes; certificates rotated under a running workload are picked up
without a restart and without a failed commit."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from pathlib import Path

import aiohttp
import pytest
from cryptography import x509

from tidemark_compute.topology import (
    Topology,
    client_tls,
    load_topology,
    membership_source,
    record_volume_epoch,
)
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.tls import certificate_for, ensure_ca, issue
from tidemark_protocol.node_auth import Role

pytestmark = [pytest.mark.process, pytest.mark.security, pytest.mark.timeout(240)]

BASE_IP = "127.0.168.10"  # this module's range: 127.0.168.10 .. 127.0.168.40
MITM_HOST = "127.0.168.40"


@pytest.fixture
async def fleet(tmp_path: Path):
    fl, _ = await fleet_mod.up(tmp_path / "fleet", 2, 4, 32, 4096, BASE_IP, gossip_interval=0.3)
    try:
        yield fl
    finally:
        fl.down()


def served_certificate(host: str, port: int, trust: ssl.SSLContext) -> x509.Certificate:
    with socket.create_connection((host, port), timeout=5) as raw, trust.wrap_socket(raw, server_hostname=host) as s:
        return x509.load_der_x509_certificate(s.getpeercert(binary_form=True))


async def test_nodes_serve_only_tls_of_the_fleets_ca(fleet, tmp_path: Path):
    topology = load_topology(fleet.dir)
    node = fleet.nodes["a1"]
    assert node.url.startswith("https://")
    async with topology.session(Role.ADMIN) as s, s.get(f"{node.url}/v1/status") as resp:
        assert resp.status == 200 and (await resp.json())["node"] == "a1"
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):  # plain http to the TLS port: no answer of the API
            async with plain.get(f"http://{node.host}:{node.port}/v1/status") as resp:
                assert resp.status >= 400
        with pytest.raises(aiohttp.ClientConnectorCertificateError):  # the system's trust does not know it
            async with plain.get(f"{node.url}/livez"):
                pass
    ensure_ca(tmp_path / "other")
    other = client_tls(tmp_path / "other" / "tls" / "ca.crt")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=other)) as s:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with s.get(f"{node.url}/livez"):
                pass


async def mitm_server(directory: Path) -> asyncio.Server:
    """A TLS listener with a certificate for the right address from another CA."""
    ca, key = ensure_ca(directory, "a man in the middle")
    cert_pem, key_pem = issue(ca, key, "mitm", MITM_HOST)
    (directory / "mitm.crt").write_bytes(cert_pem)
    (directory / "mitm.key").write_bytes(key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(directory / "mitm.crt", directory / "mitm.key")
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.read(1024))  # a writer's request would arrive here
        writer.close()

    server = await asyncio.start_server(handle, MITM_HOST, 0, ssl=ctx)
    server.seen = seen  # type: ignore[attr-defined]
    return server


async def test_a_man_in_the_middle_is_refused_and_the_writer_writes_through_the_others(fleet, tmp_path: Path):
    server = await mitm_server(tmp_path / "mitm")
    port = server.sockets[0].getsockname()[1]
    topology = load_topology(fleet.dir)
    topology.nodes["c2"] = f"https://{MITM_HOST}:{port}"  # the writer is sent there for c2
    model = Model()
    writer = await Writer.open(topology, timeout=30)
    try:
        record_volume_epoch(fleet.dir, topology.volume_epoch)
        stats = await run_workload(writer, model, 2.0, concurrency=8)
        assert stats.acked > 0 and stats.failed == 0, stats
        assert not writer.streams["c2"].connected.is_set()
        result = await verify(writer, model, timeout=30)
        assert result.ok, result.to_json()
    finally:
        await writer.close()
        server.close()
    assert server.seen == [], "the writer sent something to the man in the middle"  # type: ignore[attr-defined]


async def test_certificates_rotated_under_a_workload_fail_no_commit(fleet):
    topology = load_topology(fleet.dir)
    trust = topology.tls
    assert trust is not None
    before = {n: served_certificate(p.host, p.port, trust).serial_number for n, p in fleet.nodes.items()}
    model = Model()
    writer = await Writer.open(topology, timeout=30, membership_source=membership_source(fleet.dir))
    try:
        record_volume_epoch(fleet.dir, topology.volume_epoch)
        work = asyncio.create_task(run_workload(writer, model, 9.0, concurrency=8))
        await asyncio.sleep(1.0)
        for name, node in fleet.nodes.items():  # as `playground up` does near expiry
            certificate_for(fleet.dir, name, node.host, force=True)
        deadline = time.monotonic() + 20
        rotated: set[str] = set()
        while rotated != set(fleet.nodes) and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            rotated = {n for n, p in fleet.nodes.items()
                       if served_certificate(p.host, p.port, trust).serial_number != before[n]}
        assert rotated == set(fleet.nodes), f"still the old certificate: {set(fleet.nodes) - rotated}"
        stats = await work
        assert stats.acked > 0 and stats.failed == 0, stats
        # New connections (a new writer's, the nodes' own to their peers) use the new ones.
        await writer.close()
        writer = await Writer.open(load_topology(fleet.dir), timeout=30)
        result = await verify(writer, model, timeout=30)
        assert result.ok, result.to_json()
    finally:
        await writer.close()


def test_topology_never_saves_its_secrets(fleet):
    topology: Topology = load_topology(fleet.dir)
    assert topology.credentials is not None and topology.tls is not None
    text = (fleet.dir / "topology.json").read_text()
    key = (fleet.dir / "node-auth.key").read_text().strip()
    assert key not in text and "writer." not in text and "BEGIN" not in text
    assert (fleet.dir / "node-auth.key").stat().st_mode & 0o077 == 0
    assert (fleet.dir / "tls" / "ca.key").stat().st_mode & 0o077 == 0
