"""TLS on the PostgreSQL endpoint (issue #14): an instance with a certificate answers
SSLRequest and upgrades, so psycopg with sslmode=verify-full against the fleet's CA and
psql with sslmode=require are encrypted; with --require-tls a plain client gets SQLSTATE
28000; a certificate of another CA is refused by a verifying client; plaintext injected
behind an SSLRequest is refused (the CVE-2021-23214 pattern)."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import struct
import subprocess
from pathlib import Path

import psycopg
import pytest
from conftest import PASSWORD, USER
from sqlfakes import FakeWriter

from tidemark_playground.tls import certificate_for, ensure_ca
from tidemark_sql.instance import Instance
from tidemark_sql.scram import parse_credentials

pytestmark = [pytest.mark.sql, pytest.mark.security, pytest.mark.timeout(120)]

HOST = "127.0.229.250"


def server_tls(directory: Path) -> ssl.SSLContext:
    cert, key = certificate_for(directory, "w1", HOST)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


async def start(tmp_path: Path, require: bool) -> Instance:
    return await Instance.start(FakeWriter(), HOST, 0, parse_credentials(f"{USER}:{PASSWORD}"),
                                tls=server_tls(tmp_path / "fleet"), require_tls=require)


def dsn(instance: Instance, **extra: str) -> str:
    host, port = instance.address  # type: ignore[misc]
    params = {"host": host, "port": str(port), "user": USER, "password": PASSWORD, "dbname": "tidemark",
              "connect_timeout": "10", **extra}
    return " ".join(f"{k}={v}" for k, v in params.items())


async def test_verify_full_against_the_fleets_ca_is_encrypted_and_plain_still_works(tmp_path: Path):
    instance = await start(tmp_path, require=False)
    ca = tmp_path / "fleet" / "tls" / "ca.crt"
    try:
        async with await psycopg.AsyncConnection.connect(
                dsn(instance, sslmode="verify-full", sslrootcert=str(ca)), autocommit=True) as conn:
            assert conn.pgconn.ssl_in_use
            await conn.execute("CREATE TABLE t (v INTEGER)")
            await conn.execute("INSERT INTO t VALUES (7)")
            assert await (await conn.execute("SELECT v FROM t")).fetchall() == [(7,)]
        async with await psycopg.AsyncConnection.connect(dsn(instance, sslmode="disable")) as conn:
            assert not conn.pgconn.ssl_in_use  # offered, not required
        ensure_ca(tmp_path / "other", "another CA")
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            await psycopg.AsyncConnection.connect(
                dsn(instance, sslmode="verify-full", sslrootcert=str(tmp_path / "other" / "tls" / "ca.crt")))
    finally:
        await instance.close()


async def test_require_tls_refuses_plain_clients_with_28000_and_psql_gets_tls(tmp_path: Path):
    instance = await start(tmp_path, require=True)
    host, port = instance.address  # type: ignore[misc]
    try:
        with pytest.raises(psycopg.OperationalError) as refused:
            await psycopg.AsyncConnection.connect(dsn(instance, sslmode="disable"))
        assert "TLS connections only" in str(refused.value)
        psql = await asyncio.to_thread(
            subprocess.run,
            ["/usr/bin/psql", "-X", "-A", "-t", "-c", "SELECT 40 + 2",
             f"host={host} port={port} user={USER} dbname=tidemark sslmode=require"],
            capture_output=True, text=True, timeout=30, env={**os.environ, "PGPASSWORD": PASSWORD})
        assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
    finally:
        await instance.close()


async def test_plaintext_injected_behind_an_ssl_request_is_refused(tmp_path: Path):
    instance = await start(tmp_path, require=False)
    host, port = instance.address  # type: ignore[misc]

    def attack() -> bytes:
        ssl_request = struct.pack("!II", 8, 80877103)
        body = struct.pack("!I", 196608) + b"user\0" + USER.encode() + b"\0\0"
        startup = struct.pack("!I", len(body) + 4) + body
        with socket.create_connection((host, port), timeout=5) as s:
            s.sendall(ssl_request + startup)  # in one segment: the startup is not encrypted
            s.settimeout(5)
            out = b""
            while chunk := s.recv(4096):
                out += chunk
            return out

    try:
        answer = await asyncio.to_thread(attack)
        assert not answer.startswith(b"S") and b"unencrypted data after SSL request" in answer, answer
    finally:
        await instance.close()
