"""SCRAM-SHA-256 password authentication (RFC 5802 / 7677), server side, sans-IO.

Only salted keys are kept in memory (StoredKey, ServerKey), never the password after
loading. Channel binding is not offered (no TLS yet).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

ITERATIONS = 4096
PASSWORD_ENV = "TIDEMARK_SQL_PASSWORD"  # "user:password"


class AuthFailed(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Verifier:
    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(cls, password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> Verifier:
        salt = salt or secrets.token_bytes(16)
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", "sha256")
        return cls(salt, iterations, hashlib.sha256(client_key).digest(),
                   hmac.digest(salted, b"Server Key", "sha256"))


def parse_credentials(text: str) -> dict[str, Verifier]:
    """Lines of `user:password` (blank lines and # comments skipped)."""
    users: dict[str, Verifier] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError("credentials must be lines of user:password")
        users[user] = Verifier.from_password(password)
    return users


def load_credentials(path: Path | None) -> dict[str, Verifier]:
    """From the file, else from $TIDEMARK_SQL_PASSWORD; empty when neither is set."""
    if path is not None:
        return parse_credentials(path.read_text())
    env = os.environ.get(PASSWORD_ENV)
    return parse_credentials(env) if env else {}


def _attrs(message: str) -> dict[str, str]:
    out = {}
    for part in message.split(","):
        if len(part) >= 2 and part[1] == "=":
            out[part[0]] = part[2:]
    return out


class ScramExchange:
    """One authentication: first() answers client-first, final() checks client-final."""

    def __init__(self, verifier: Verifier | None) -> None:
        # An unknown user gets a made-up verifier: the exchange fails the same way.
        self.known = verifier is not None
        self.verifier = verifier or Verifier.from_password(secrets.token_hex(16))
        self._server_first = ""
        self._client_first_bare = ""
        self._nonce = ""

    def first(self, client_first: bytes) -> bytes:
        text = client_first.decode()
        gs2, _, bare = text.partition(",")
        authzid, _, bare = bare.partition(",")
        if gs2 not in ("n", "y") or not bare:
            raise AuthFailed("SCRAM: channel binding is not supported")
        client_nonce = _attrs(bare).get("r")
        if not client_nonce:
            raise AuthFailed("SCRAM: client-first message without a nonce")
        self._gs2 = f"{gs2},{authzid},"
        self._client_first_bare = bare
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        salt = base64.b64encode(self.verifier.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={self.verifier.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        text = client_final.decode()
        without_proof, _, proof_part = text.rpartition(",p=")
        attrs = _attrs(without_proof)
        if attrs.get("r") != self._nonce or not proof_part:
            raise AuthFailed("SCRAM: nonce mismatch")
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise AuthFailed("SCRAM: channel binding mismatch")
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.digest(self.verifier.stored_key, auth_message, "sha256")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError as exc:
            raise AuthFailed("SCRAM: bad proof") from exc
        if len(proof) != len(signature):
            raise AuthFailed("SCRAM: bad proof")
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not self.known or not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.verifier.stored_key):
            raise AuthFailed("password authentication failed")
        server_sig = hmac.digest(self.verifier.server_key, auth_message, "sha256")
        return b"v=" + base64.b64encode(server_sig)
