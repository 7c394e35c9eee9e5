"""Encryption at rest of backup objects: the one home of the sealed-object format.

    b"TMSE" | u8 version (1) | u8 id_len | key id (ASCII) | 12-byte nonce | AES-256-GCM(body) + 16-byte tag

The associated data is everything before the ciphertext plus the object's name (its key
relative to the backup root), so a changed version, key id or nonce, a flipped byte, a
truncation, or an object copied or renamed to another key all fail the tag. The key id
is the first 8 bytes of SHA-256 over a label and the key (it names a key without
revealing it), so a keyring picks the key by id and keys can rotate: the writer seals
with the current key, readers hold every key objects may still be sealed with.

Objects written without a key (every format before this one: `TMK1…` or JSON) do not
start with the magic: a reader without keys reads them as before; a reader WITH keys
refuses them (else anyone who can write the bucket could plant plaintext objects). Every
failure is a SealError (a UserError: one line, naming the object and the key id), never
an object to skip: a restore that meets one refuses and installs nothing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tidemark_protocol.errors import UserError

MAGIC = b"TMSE"
VERSION = 1
KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12  # random per object: 2**32 objects per key keep collisions negligible
TAG_BYTES = 16
_HEAD = struct.Struct("<4sBB")
_ID_LABEL = b"tidemark-backup-key-id\0"


class SealError(UserError):
    """A sealed object cannot be opened (or a key cannot be loaded): never restored from."""


class KeyFileError(SealError):
    pass


class MissingKey(SealError):
    pass


class NotAuthentic(SealError):
    pass


@dataclass(frozen=True)
class Key:
    id: str
    secret: bytes = field(repr=False)  # never in a repr, a log line or an error

    @classmethod
    def of(cls, secret: bytes) -> Key:
        if len(secret) != KEY_BYTES:
            raise KeyFileError(f"a backup key is {KEY_BYTES} bytes, got {len(secret)}")
        return cls(hashlib.sha256(_ID_LABEL + secret).hexdigest()[:16], secret)


def parse_key(text: bytes, source: str = "key") -> Key:
    """A key from a key file's content: 64 hex digits (`openssl rand -hex 32`), base64 of
    32 bytes (`openssl rand -base64 32`), or 32 raw bytes. Errors never quote the content."""
    stripped = text.strip()
    try:
        if len(stripped) == 2 * KEY_BYTES:
            return Key.of(bytes.fromhex(stripped.decode("ascii")))
        decoded = base64.b64decode(stripped, validate=True)
        if len(decoded) == KEY_BYTES:
            return Key.of(decoded)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        pass
    if len(text) == KEY_BYTES:
        return Key.of(text)
    raise KeyFileError(f"{source}: not a backup key: expected {KEY_BYTES} bytes as 64 hex digits "
                       "or base64 (e.g. `openssl rand -hex 32`)")


def load_key_file(path: str | Path) -> Key:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"backup key file {path}: {exc.strerror or exc}") from exc
    return parse_key(data, f"backup key file {path}")


def new_key_file(path: Path) -> Key:
    """Write a fresh random key (hex, mode 0600) to PATH, which must not exist."""
    secret = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret.hex() + "\n")
    return Key.of(secret)


class Keyring:
    """The keys a process holds; the first seals (the current key), all open."""

    def __init__(self, keys: Sequence[Key] = ()) -> None:
        self.keys = list(keys)
        self.by_id = {k.id: k for k in self.keys}
        self._aead = {k.id: AESGCM(k.secret) for k in self.keys}

    @classmethod
    def from_files(cls, paths: Iterable[str | Path]) -> Keyring:
        return cls([load_key_file(p) for p in paths])

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __repr__(self) -> str:
        return f"Keyring(ids={list(self.by_id)})"

    @property
    def current(self) -> Key | None:
        return self.keys[0] if self.keys else None

    def seal(self, name: str, data: bytes) -> bytes:
        """DATA sealed under the current key for object NAME; unchanged without keys."""
        key = self.current
        if key is None:
            return data
        kid = key.id.encode("ascii")
        head = _HEAD.pack(MAGIC, VERSION, len(kid)) + kid + os.urandom(NONCE_BYTES)
        return head + self._aead[key.id].encrypt(head[-NONCE_BYTES:], data, head + name.encode())

    def open(self, name: str, data: bytes) -> bytes:
        """The body of object NAME; SealError if it is not one these keys can trust."""
        if not is_sealed(data):
            if self.keys:
                raise NotAuthentic(f"backup object {name} is not encrypted, but backup keys are "
                                   f"given (ids {', '.join(self.by_id)}): refusing it (an "
                                   "unencrypted backup is read without --backup-key-file)")
            return data
        if len(data) < _HEAD.size:
            raise NotAuthentic(f"backup object {name}: encrypted header truncated ({len(data)} bytes)")
        _magic, version, id_len = _HEAD.unpack_from(data)
        body_at = _HEAD.size + id_len + NONCE_BYTES
        if version != VERSION:
            raise NotAuthentic(f"backup object {name}: unknown encryption format version {version}")
        if len(data) < body_at + TAG_BYTES:
            raise NotAuthentic(f"backup object {name}: encrypted header truncated ({len(data)} bytes)")
        kid = data[_HEAD.size : _HEAD.size + id_len].decode("ascii", "replace")
        aead = self._aead.get(kid)
        if aead is None:
            have = f"have {', '.join(self.by_id)}" if self.keys else "no backup key given"
            raise MissingKey(f"backup object {name} is encrypted with key id {kid}, which is not in "
                             f"the keyring ({have}): pass that key with --backup-key-file")
        view = memoryview(data)
        try:
            return aead.decrypt(bytes(view[body_at - NONCE_BYTES : body_at]), view[body_at:],
                                bytes(view[:body_at]) + name.encode())
        except InvalidTag:
            raise NotAuthentic(f"backup object {name} failed authentication with key id {kid} "
                               "(modified in the bucket, renamed, or damaged): refusing it") from None


def is_sealed(data: bytes) -> bool:
    return data[:4] == MAGIC


NO_KEYS = Keyring()
