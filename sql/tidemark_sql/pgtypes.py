"""PostgreSQL type OIDs for SQLite values, text encoding of results, decoding of
bound parameters (text and binary formats)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

BOOL, BYTEA, INT8, INT2, INT4, TEXT, FLOAT4, FLOAT8, UNKNOWN, VARCHAR, NUMERIC = (
    16, 17, 20, 21, 23, 25, 700, 701, 705, 1043, 1700,
)
TYPE_SIZES = {BOOL: 1, INT8: 8, INT2: 2, INT4: 4, FLOAT4: 4, FLOAT8: 8}


def oid_for(decltype: str | None, sample: Any) -> int:
    """A column's type: from its declared type (SQLite affinity rules), else from the
    first value it returned, else text."""
    if decltype:
        d = decltype.upper()
        if "BOOL" in d:
            return BOOL
        if "INT" in d:
            return INT8
        if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
            return TEXT
        if "BLOB" in d or "BYTEA" in d:
            return BYTEA
        if any(k in d for k in ("REAL", "FLOA", "DOUB")):
            return FLOAT8
        if "NUMERIC" in d or "DECIMAL" in d:
            return NUMERIC if not isinstance(sample, int | float) else (INT8 if isinstance(sample, int) else FLOAT8)
    if isinstance(sample, bool):
        return BOOL
    if isinstance(sample, int):
        return INT8
    if isinstance(sample, float):
        return FLOAT8
    if isinstance(sample, bytes):
        return BYTEA
    return TEXT


def column_oids(columns: Sequence[tuple[str, str | None]], rows: Sequence[Sequence[Any]]) -> list[int]:
    oids = []
    for i, (_name, decl) in enumerate(columns):
        sample = next((row[i] for row in rows if row[i] is not None), None)
        oids.append(oid_for(decl, sample))
    return oids


def encode_text(value: Any, oid: int) -> bytes | None:
    if value is None:
        return None
    if oid == BOOL and isinstance(value, int):
        return b"t" if value else b"f"
    if isinstance(value, bytes):
        return b"\\x" + value.hex().encode()
    if isinstance(value, float):
        return repr(value).encode()
    return str(value).encode()


def encode_binary(value: Any, oid: int) -> bytes | None:
    if value is None:
        return None
    if oid == INT8:
        return struct.pack("!q", int(value))
    if oid == FLOAT8:
        return struct.pack("!d", float(value))
    if oid == BOOL:
        return b"\x01" if value else b"\x00"
    if oid == BYTEA and isinstance(value, bytes):
        return value
    return encode_text(value, oid)


def decode_param(raw: bytes | None, oid: int, binary: bool) -> Any:
    """A bound parameter as a SQLite value."""
    if raw is None:
        return None
    if binary:
        if oid in (INT2, INT4, INT8):
            return int.from_bytes(raw, "big", signed=True)
        if oid == FLOAT8:
            return struct.unpack("!d", raw)[0]
        if oid == FLOAT4:
            return struct.unpack("!f", raw)[0]
        if oid == BOOL:
            return 1 if raw != b"\x00" else 0
        if oid == BYTEA:
            return bytes(raw)
        return raw.decode()
    text = raw.decode()
    if oid in (INT2, INT4, INT8):
        return int(text)
    if oid in (FLOAT4, FLOAT8):
        return float(text)
    if oid == NUMERIC:
        return int(text) if text.lstrip("-").isdigit() else float(text)
    if oid == BOOL:
        return 1 if text.lower() in ("t", "true", "1", "yes", "on", "y") else 0
    if oid == BYTEA:
        return bytes.fromhex(text[2:]) if text.startswith("\\x") else text.encode()
    return text
