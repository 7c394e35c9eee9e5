"""Reads from storage (all blocking: run them in the reader executor).

A page at read point R = the latest materialized version <= R, plus redo of that page's
records in (version, R] found through the per-page index. Every stored record is
CRC-checked when read; a corrupt one raises CorruptRecord and is never served.
"""

from __future__ import annotations

import struct

from tidemark_protocol.errors import CorruptRecord
from tidemark_protocol.pages import apply_redo, empty_page
from tidemark_protocol.records import FORMAT_VERSION, Record, crc32c, decode_one

from . import store as keys
from .store import Store

_CRC = struct.Struct("<I")
_RECORD = struct.Struct("<BBHIQQQQI")  # records.py header, format version 1


def parse_stored(raw: bytes, pg: int, lsn: int) -> tuple[int, int, bytes]:
    """(page, flags, payload) of a stored record after checking its CRC and framing:
    the light path of decode_one for background scans (no Record object)."""
    size = _RECORD.size
    if len(raw) < size + 4:
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: shorter than its header")
    version, flags, _r, rpg, rlsn, page, _prev, _prev_page, plen = _RECORD.unpack_from(raw)
    if version != FORMAT_VERSION or size + plen + 4 != len(raw) or rpg != pg or rlsn != lsn or flags > 3:
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: header does not match its key")
    if crc32c(raw[:-4]) != _CRC.unpack_from(raw, len(raw) - 4)[0]:
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: crc32c mismatch")
    return page, flags, raw[size:-4]


def encode_version(image: bytes) -> bytes:
    return _CRC.pack(crc32c(image)) + image


def decode_version(value: bytes, pg: int, page: int, lsn: int) -> bytes:
    if len(value) < _CRC.size:
        raise CorruptRecord(f"page version pg={pg} page={page} lsn={lsn}: truncated")
    (crc,) = _CRC.unpack_from(value)
    image = value[_CRC.size :]
    if crc32c(image) != crc:
        raise CorruptRecord(f"page version pg={pg} page={page} lsn={lsn}: crc32c mismatch")
    return image


def read_record(store: Store, pg: int, lsn: int) -> Record | None:
    raw = store.get(keys.log_key(pg, lsn))
    if raw is None:
        return None
    try:
        return decode_one(raw)
    except CorruptRecord:
        raise
    except Exception as exc:  # a malformed stored record is corruption too
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: {exc}") from exc


def latest_version(store: Store, pg: int, page: int, at: int) -> tuple[int, bytes] | None:
    """(lsn, image) of the newest version of `page` at or below `at`."""
    found = store.last_at_or_below(keys.version_key(pg, page, at), keys.page_prefix(b"V", pg, page))
    if found is None:
        return None
    key, value = found
    _page, lsn = keys.page_lsn(key)
    return lsn, decode_version(value, pg, page, lsn)


def page_records(store: Store, pg: int, page: int, after: int, upto: int) -> list[int]:
    """LSNs of `page`'s records in (after, upto], ascending, from the per-page index."""
    if upto <= after:
        return []
    start = keys.index_key(pg, page, after + 1)
    end = keys.index_key(pg, page, upto) + b"\0"  # upto inclusive
    return [keys.page_lsn(k)[1] for k in store.scan_keys(start, end)]


def read_page(store: Store, pg: int, page: int, at: int, page_size: int) -> bytes:
    base = latest_version(store, pg, page, at)
    vlsn, image = base if base is not None else (0, empty_page(page_size))
    for lsn in page_records(store, pg, page, vlsn, at):
        record = read_record(store, pg, lsn)
        if record is None:
            continue  # dropped by a seal between the index scan and here
        image = apply_redo(image, record, page_size)
    return image


def read_records(store: Store, pg: int, after: int, upto: int, limit: int) -> tuple[bytes, int | None]:
    """Encoded records with after < lsn <= upto (CRC-checked). Stops before a corrupt
    record and returns its LSN as the second value."""
    out: list[bytes] = []
    start = keys.log_key(pg, after + 1)
    end = keys.log_key(pg, upto) + b"\0" if upto < keys.MAX_U64 else keys.prefix_end(keys.pg_prefix(b"L", pg))
    for key, raw in store.scan(start, end, limit):
        try:
            decode_one(raw)
        except Exception:
            return b"".join(out), keys.log_lsn(key)
        out.append(raw)
    return b"".join(out), None
