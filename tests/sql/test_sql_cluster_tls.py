"""The instances as they serve on Kubernetes (#14), over a real fleet: one CA for the storage
nodes and the instances (the cluster's), an instance certificate naming the -rw/-ro/-r
Services and no IP. The PostgreSQL port offers TLS (verify-full by the Service's name,
with libpq's hostaddr for the address; plain refused, as spec.instance.tls.required
defaults), the admin endpoint is https,
the replica follows the writer's feed over wss verified against the CA (verify-ca: pods
are dialled by IP), and a renewed certificate is served without a restart."""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path

import aiohttp
import psycopg
import pytest
from conftest import PASSWORD, USER, open_writer

from tidemark_compute.reader import Reader
from tidemark_compute.topology import (
    TLS_CA_FILE,
    TLS_DIR,
    client_tls_verify_ca,
    load_topology,
    membership_source,
)
from tidemark_node.server_tls import ServerTLS
from tidemark_operator import instancetls
from tidemark_playground import fleet as fleet_mod
from tidemark_protocol import pki
from tidemark_protocol.feed import feed_token
from tidemark_sql.instance import Instance
from tidemark_sql.replica import ReplicaInstance
from tidemark_sql.scram import parse_credentials

pytestmark = [pytest.mark.sql, pytest.mark.security, pytest.mark.timeout(240)]

BASE, WRITER_HOST, REPLICA_HOST = "127.0.232.10", "127.0.232.30", "127.0.232.31"


def issue(fleet_dir: Path, out: Path) -> tuple[Path, Path]:
    """The instances' certificate (instancetls.hosts: Service names only), from the fleet's CA."""
    tls = fleet_dir / TLS_DIR
    ca, ca_key = pki.load_ca((tls / TLS_CA_FILE).read_bytes(), (tls / "ca.key").read_bytes())
    cert, key = pki.issue(ca, ca_key, "db-rw.ns.svc", instancetls.hosts("db", "ns"), 90, dt.datetime.now(dt.UTC))
    out.mkdir(exist_ok=True)
    (out / "tls.crt").write_bytes(cert)
    (out / "tls.key").write_bytes(key)
    return out / "tls.crt", out / "tls.key"


def dsn(service: str, host: str, port: int, ca: Path, mode: str = "verify-full") -> str:
    return (f"host={service}.ns.svc hostaddr={host} port={port} user={USER} password={PASSWORD} dbname=tidemark "
            f"sslmode={mode} sslrootcert={ca} connect_timeout=10")


async def test_cluster_instances_serve_tls_and_the_replica_follows_over_wss(tmp_path: Path) -> None:
    fl, _topology = await fleet_mod.up(tmp_path / "fleet", 2, 4, 1024, 4096, BASE, gossip_interval=0.3)
    ca = fl.dir / TLS_DIR / TLS_CA_FILE
    cert, key = issue(fl.dir, tmp_path / "instance-tls")
    tls = ServerTLS(str(cert), str(key))
    creds = parse_credentials(f"{USER}:{PASSWORD}")
    token = feed_token("shared secret")
    writer = replica = reader = None
    try:
        writer = await Instance.start(await open_writer(fl), WRITER_HOST, 0, creds, admin_port=0, feed_token=token,
                                      tls=tls.context, admin_tls=tls.context, require_tls=True)
        assert writer.admin.url.startswith(f"https://{WRITER_HOST}:")
        feed = f"ws{writer.admin.url[4:]}/v1/feed"
        assert feed.startswith("wss://")
        # as on Kubernetes: the cluster's one CA, chain only, for the nodes and the feed alike
        topology = load_topology(fl.dir)
        topology.tls = client_tls_verify_ca(ca_file=ca)
        reader = Reader(topology, lambda: feed, membership_source(fl.dir), feed_token=token)
        await reader.start(timeout=30)
        replica = await ReplicaInstance.start(reader, REPLICA_HOST, 0, creds, admin_port=0, tls=tls.context,
                                              admin_tls=tls.context)
        wport, rport = writer.address[1], replica.address[1]  # type: ignore[index]
        async with await psycopg.AsyncConnection.connect(dsn("db-rw", WRITER_HOST, wport, ca),
                                                         autocommit=True) as conn:
            assert conn.pgconn.ssl_in_use
            await conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
            await conn.execute("INSERT INTO t VALUES (7)")
        async with await psycopg.AsyncConnection.connect(dsn("db-ro", REPLICA_HOST, rport, ca),
                                                         autocommit=True) as conn:
            assert conn.pgconn.ssl_in_use
            for _ in range(100):  # bounded: 10 s for the feed to bring the row
                try:
                    if await (await conn.execute("SELECT k FROM t")).fetchall() == [(7,)]:
                        break
                except psycopg.Error:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the replica never read the row")
        with pytest.raises(psycopg.OperationalError, match="TLS connections only"):  # required (the default)
            await psycopg.AsyncConnection.connect(dsn("db-r", WRITER_HOST, wport, ca, "disable"))
        async with await psycopg.AsyncConnection.connect(dsn("db-r", WRITER_HOST, wport, ca, "prefer")) as conn:
            assert conn.pgconn.ssl_in_use  # libpq's default mode asks for TLS
        with pytest.raises(psycopg.OperationalError):  # the certificate names the Services, no IP
            await psycopg.AsyncConnection.connect(
                f"host={WRITER_HOST} port={wport} user={USER} password={PASSWORD} dbname=tidemark "
                f"sslmode=verify-full sslrootcert={ca} connect_timeout=10")
        # the admin endpoint: https only, verified by chain
        trust = client_tls_verify_ca(ca_file=ca)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{replica.admin.url}/readyz", ssl=trust) as resp:
                assert resp.status == 200
            with pytest.raises(aiohttp.ClientError):
                await session.get(f"http{writer.admin.url[5:]}/readyz")
        # a renewed certificate (the kubelet swaps the Secret's files) reaches new handshakes
        admin = (WRITER_HOST, int(writer.admin.url.rsplit(":", 1)[1]))
        before = await asyncio.to_thread(ssl.get_server_certificate, admin, timeout=10)
        issue(fl.dir, tmp_path / "instance-tls")
        assert tls.reload()
        after = await asyncio.to_thread(ssl.get_server_certificate, admin, timeout=10)
        assert before != after and after.strip() == cert.read_text().strip()
        async with await psycopg.AsyncConnection.connect(dsn("db-rw", WRITER_HOST, wport, ca)) as conn:
            assert conn.pgconn.ssl_in_use
    finally:
        if replica is not None:
            await replica.close()
        elif reader is not None:
            await reader.close()
        if writer is not None:
            await writer.close()
        fl.down()
