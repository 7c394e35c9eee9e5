"""A bare PostgreSQL frontend for tests that psycopg cannot express: SQLSTATEs of
startup failures, malformed and oversized messages (pygwire on asyncio streams)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass

from pygwire.messages import (
    Authentication,
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    ErrorResponse,
    PGMessage,
    ReadyForQuery,
    SASLInitialResponse,
    SASLResponse,
    StartupMessage,
)


@dataclass
class Other:
    kind: bytes
    payload: bytes


_KINDS = {b"R": Authentication, b"E": ErrorResponse, b"Z": ReadyForQuery}


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawClient:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        return cls(reader, writer)

    async def send(self, raw: bytes) -> None:
        self.writer.write(raw)
        await self.writer.drain()

    async def recv(self, timeout: float = 10) -> PGMessage | Other | None:
        """The next message, None at EOF (only the kinds these tests look at decoded)."""
        try:
            head = await asyncio.wait_for(self.reader.readexactly(5), timeout)
        except asyncio.IncompleteReadError:
            return None
        (length,) = struct.unpack("!I", head[1:])
        payload = memoryview(await asyncio.wait_for(self.reader.readexactly(length - 4), timeout))
        kind = _KINDS.get(head[:1])
        return kind.decode(payload) if kind is not None else Other(head[:1], bytes(payload))

    async def until(self, kinds: tuple[type, ...], timeout: float = 10) -> list[PGMessage]:
        out = []
        while True:
            msg = await self.recv(timeout)
            if msg is None:
                return out
            out.append(msg)
            if isinstance(msg, kinds):
                return out

    async def login(self, user: str, password: str) -> list[PGMessage]:
        """Startup and SCRAM-SHA-256; returns what the server sent up to ReadyForQuery
        or an ErrorResponse."""
        await self.send(StartupMessage(params={"user": user, "database": "tidemark"}).to_wire())
        first = await self.recv()
        if not isinstance(first, AuthenticationSASL):
            return [first] + await self.until((ReadyForQuery, ErrorResponse))
        nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        bare = f"n=,r={nonce}"
        await self.send(SASLInitialResponse(mechanism="SCRAM-SHA-256", data=f"n,,{bare}".encode()).to_wire())
        cont = await self.recv()
        if not isinstance(cont, AuthenticationSASLContinue):
            return [cont]
        server_first = cont.data.decode()
        attrs = dict(part.split("=", 1) for part in server_first.split(","))
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        without_proof = f"c=biws,r={attrs['r']}"
        auth = f"{bare},{server_first},{without_proof}".encode()
        sig = hmac.digest(hashlib.sha256(client_key).digest(), auth, "sha256")
        proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True))).decode()
        await self.send(SASLResponse(data=f"{without_proof},p={proof}".encode()).to_wire())
        return await self.until((ReadyForQuery, ErrorResponse))

    def close(self) -> None:
        self.writer.close()


def error_code(messages: list[PGMessage]) -> str | None:
    return next((m.code for m in messages if isinstance(m, ErrorResponse)), None)


def logged_in(messages: list[PGMessage]) -> bool:
    return any(isinstance(m, AuthenticationOk) for m in messages) and isinstance(messages[-1], ReadyForQuery)
