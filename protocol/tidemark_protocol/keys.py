"""The storage node's RocksDB key and value layout, shared by the node and by the restore
tools that build SST files for it (`POST /v1/segments/{pg}/install`).

Keys use big-endian integers so RocksDB's byte order is numeric order:
    L pg(4) lsn(8)            -> encoded record (as received, CRC included)
    X pg(4) page(8) lsn(8)    -> b""  per-page index of log records (reads, GC)
    V pg(4) page(8) lsn(8)    -> crc32c(image) (4, LE) + page image (materialized version)
    M pg(4)                   -> segment meta JSON (written with the records it describes)
    N name                    -> node-level state (generation, peer directory)
"""

from __future__ import annotations

import struct

from .errors import CorruptRecord
from .records import crc32c

_PG = struct.Struct(">I")
_PG_LSN = struct.Struct(">IQ")
_PG_PAGE_LSN = struct.Struct(">IQQ")
_PG_PAGE = struct.Struct(">IQ")
_VERSION_KEY = struct.Struct(">cIQQ")  # b"V" pg page lsn: _PG_PAGE_LSN with its tag
_VERSION_CRC = struct.Struct("<I")
VERSION_KEY_SIZE = _VERSION_KEY.size
MAX_U64 = (1 << 64) - 1


def log_key(pg: int, lsn: int) -> bytes:
    return b"L" + _PG_LSN.pack(pg, lsn)


def log_lsn(key: bytes) -> int:
    return _PG_LSN.unpack_from(key, 1)[1]


def index_key(pg: int, page: int, lsn: int) -> bytes:
    return b"X" + _PG_PAGE_LSN.pack(pg, page, lsn)


def version_key(pg: int, page: int, lsn: int) -> bytes:
    return _VERSION_KEY.pack(b"V", pg, page, lsn)


def parse_version_key(key: bytes) -> tuple[int, int, int]:
    """(pg, page, lsn) of a V key; ValueError for anything else."""
    if len(key) != _VERSION_KEY.size:
        raise ValueError(f"not a page-version key: {key[:32]!r}")
    tag, pg, page, lsn = _VERSION_KEY.unpack(key)
    if tag != b"V":
        raise ValueError(f"not a page-version key: {key[:32]!r}")
    return pg, page, lsn


def page_lsn(key: bytes) -> tuple[int, int]:
    """(page, lsn) of an X or V key."""
    _pg, page, lsn = _PG_PAGE_LSN.unpack_from(key, 1)
    return page, lsn


def page_prefix(tag: bytes, pg: int, page: int) -> bytes:
    return tag + _PG_PAGE.pack(pg, page)


def meta_key(pg: int) -> bytes:
    return b"M" + _PG.pack(pg)


def pg_prefix(tag: bytes, pg: int) -> bytes:
    return tag + _PG.pack(pg)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    return (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")


def node_key(name: str) -> bytes:
    return b"N" + name.encode()


# -- page-version values ------------------------------------------------------------------
def encode_version(image: bytes) -> bytes:
    """A V key's value: the image behind its CRC32C."""
    return _VERSION_CRC.pack(crc32c(image)) + image


def version_crc_ok(value: bytes) -> bool:
    """The stored value's CRC matches its image (no copy of the image is returned)."""
    return len(value) >= _VERSION_CRC.size and crc32c(value[_VERSION_CRC.size :]) == \
        _VERSION_CRC.unpack_from(value)[0]


def decode_version(value: bytes, pg: int, page: int, lsn: int) -> bytes:
    """The image of a V key's value; CorruptRecord if it fails its CRC."""
    if len(value) < _VERSION_CRC.size:
        raise CorruptRecord(f"page version pg={pg} page={page} lsn={lsn}: truncated")
    (crc,) = _VERSION_CRC.unpack_from(value)
    image = value[_VERSION_CRC.size :]
    if crc32c(image) != crc:
        raise CorruptRecord(f"page version pg={pg} page={page} lsn={lsn}: crc32c mismatch")
    return image
