"""PostgreSQL type OIDs for SQLite values, text and binary encoding of results,
decoding of bound parameters (text and binary formats).

SQLite types values, not columns: a result column's type comes from its declared type
or from a statement's description (infer.py), and a value that cannot be given in
that type losslessly is an error (22P02), never a silently different value."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

BOOL, BYTEA, INT8, INT2, INT4, TEXT, FLOAT4, FLOAT8, UNKNOWN, VARCHAR, NUMERIC = (
    16, 17, 20, 21, 23, 25, 700, 701, 705, 1043, 1700,
)
DATE, TIMESTAMP, TIMESTAMPTZ = 1082, 1114, 1184
TYPE_SIZES = {BOOL: 1, INT8: 8, INT2: 2, INT4: 4, FLOAT4: 4, FLOAT8: 8, DATE: 4, TIMESTAMP: 8, TIMESTAMPTZ: 8}
TIMES = (DATE, TIMESTAMP, TIMESTAMPTZ)

_EPOCH = datetime(2000, 1, 1)  # PostgreSQL's binary date/time epoch
_EPOCH_DAYS = date(2000, 1, 1).toordinal()
_NUMERIC_HEAD = struct.Struct("!hhHH")  # ndigits, weight (base 10000), sign, display scale
_NUMERIC_NEG, _NUMERIC_NAN = 0x4000, 0xC000


def oid_for(decltype: str | None, sample: Any) -> int:
    """A column's type: from its declared type (SQLite affinity rules), else from the
    first value it returned, else text."""
    if decltype:
        d = decltype.upper()
        if "BOOL" in d:
            return BOOL
        if "TIMESTAMPTZ" in d or ("TIMESTAMP" in d and "WITH TIME ZONE" in d):
            return TIMESTAMPTZ
        if "TIMESTAMP" in d or "DATETIME" in d:
            return TIMESTAMP
        if d == "DATE":
            return DATE
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


# -- results --------------------------------------------------------------------------
def encode_text(value: Any, oid: int) -> bytes | None:
    if value is None:
        return None
    if oid == BOOL and isinstance(value, int):
        return b"t" if value else b"f"
    if isinstance(value, bytes):
        return b"\\x" + value.hex().encode()
    if isinstance(value, float):
        return repr(value).encode()
    if oid in TIMES:
        try:
            return _time_text(_as_datetime(value), oid).encode()
        except ValueError:
            return str(value).encode()  # as stored: text format never loses it
    return str(value).encode()


def encode_binary(value: Any, oid: int) -> bytes | None:
    if value is None:
        return None
    if oid == INT8:
        return struct.pack("!q", _as_int(value))
    if oid == FLOAT8:
        return struct.pack("!d", _as_float(value))
    if oid == BOOL:
        return b"\x01" if _as_bool(value) else b"\x00"
    if oid == BYTEA:
        return value if isinstance(value, bytes) else str(value).encode()
    if oid == NUMERIC:
        return _numeric_binary(value)
    if oid == DATE:
        return struct.pack("!i", _as_datetime(value).date().toordinal() - _EPOCH_DAYS)
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        return struct.pack("!q", (_naive_utc(_as_datetime(value)) - _EPOCH) // timedelta(microseconds=1))
    return encode_text(value, oid)


def _as_int(value: Any) -> int:
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return int(value.strip())
    raise ValueError(f"invalid input syntax for type bigint: {value!r}")


def _as_float(value: Any) -> float:
    if isinstance(value, int | float | str):
        return float(value)
    raise ValueError(f"invalid input syntax for type double precision: {value!r}")


def _as_bool(value: Any) -> bool:
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_TEXT:
        return _BOOL_TEXT[value.strip().lower()]
    raise ValueError(f"invalid input syntax for type boolean: {value!r}")


_BOOL_TEXT = {"t": True, "true": True, "1": True, "yes": True, "on": True, "y": True,
              "f": False, "false": False, "0": False, "no": False, "off": False, "n": False}


def _as_datetime(value: Any) -> datetime:
    """A stored time (ISO text as SQLite's date functions write it, or Unix seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        return datetime.fromisoformat(value.strip())
    raise ValueError(f"invalid input syntax for type timestamp: {value!r}")


def _naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def _time_text(moment: datetime, oid: int) -> str:
    if oid == DATE:
        return moment.date().isoformat()
    if oid == TIMESTAMP:
        return _naive_utc(moment).isoformat(sep=" ")
    return _naive_utc(moment).replace(tzinfo=UTC).isoformat(sep=" ")


def _numeric_binary(value: Any) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid input syntax for type numeric: {value!r}")
    number = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
    if number.is_nan():
        return _NUMERIC_HEAD.pack(0, 0, _NUMERIC_NAN, 0)
    if not number.is_finite():
        raise ValueError(f"numeric value out of range: {value!r}")
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    scaled = int("".join(map(str, digits)) or "0")
    scale = max(0, -exponent)
    frac_groups = -(-scale // 4)
    scaled = scaled * 10 ** (exponent + 4 * frac_groups)  # a whole number of 10^-4 units
    groups: list[int] = []
    while scaled:
        scaled, group = divmod(scaled, 10_000)
        groups.append(group)
    groups.reverse()
    weight = len(groups) - 1 - frac_groups
    while groups and groups[-1] == 0:
        groups.pop()
    head = _NUMERIC_HEAD.pack(len(groups), weight if groups else 0, _NUMERIC_NEG if sign and groups else 0, scale)
    return head + struct.pack(f"!{len(groups)}H", *groups)


# -- parameters -----------------------------------------------------------------------
def decode_param(raw: bytes | None, oid: int, binary: bool) -> Any:
    """A bound parameter as a SQLite value (times as ISO text, as SQLite's date
    functions write them)."""
    if raw is None:
        return None
    if binary:
        return _decode_binary(bytes(raw), oid)
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


def _decode_binary(raw: bytes, oid: int) -> Any:
    if oid in (INT2, INT4, INT8):
        return int.from_bytes(raw, "big", signed=True)
    if oid == FLOAT8:
        return struct.unpack("!d", raw)[0]
    if oid == FLOAT4:
        return struct.unpack("!f", raw)[0]
    if oid == BOOL:
        return 1 if raw != b"\x00" else 0
    if oid == BYTEA:
        return raw
    if oid == NUMERIC:
        return _numeric_value(raw)
    if oid == DATE:
        (days,) = struct.unpack("!i", raw)
        return date.fromordinal(days + _EPOCH_DAYS).isoformat()
    if oid in (TIMESTAMP, TIMESTAMPTZ):
        (micros,) = struct.unpack("!q", raw)
        moment = _EPOCH + timedelta(microseconds=micros)
        return _time_text(moment if oid == TIMESTAMP else moment.replace(tzinfo=UTC), oid)
    return raw.decode()


def _numeric_value(raw: bytes) -> int | float:
    ndigits, weight, sign, scale = _NUMERIC_HEAD.unpack_from(raw)
    if sign == _NUMERIC_NAN:
        return float("nan")
    whole = 0
    for group in struct.unpack_from(f"!{ndigits}H", raw, _NUMERIC_HEAD.size):
        whole = whole * 10_000 + group
    number = Decimal(f"{whole}E{4 * (weight - ndigits + 1)}")  # exact: no context rounding
    if sign == _NUMERIC_NEG:
        number = -number
    return int(number) if scale == 0 else float(number)
