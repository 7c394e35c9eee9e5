"""Reads from storage (all blocking: run them in the reader executor).

A page at read point R = the latest materialized version <= R, plus redo of that page's
records in (version, R] found through the per-page index. Every stored record is
CRC-checked when read; a corrupt one raises CorruptRecord and is never served.
"""

from __future__ import annotations

from tidemark_protocol import keys
from tidemark_protocol.errors import CorruptRecord
from tidemark_protocol.keys import decode_version
from tidemark_protocol.pages import apply_redo, empty_page
from tidemark_protocol.records import (
    CRC_SIZE,
    FORMAT_VERSION,
    HEADER_SIZE,
    Record,
    crc32c,
    decode_one,
    peek_header,
)

from .store import Store


def parse_stored(raw: bytes, pg: int, lsn: int) -> tuple[int, int, bytes]:
    """(page, flags, payload) of a stored record after checking its CRC and framing:
    the light path of decode_one for background scans (no Record object)."""
    if len(raw) < HEADER_SIZE + CRC_SIZE:
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: shorter than its header")
    h = peek_header(raw)
    if h.version != FORMAT_VERSION or h.encoded_size != len(raw) or h.pg != pg or h.lsn != lsn or h.flags > 3:
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: header does not match its key")
    if crc32c(raw[:-CRC_SIZE]) != int.from_bytes(raw[-CRC_SIZE:], "little"):
        raise CorruptRecord(f"stored record pg={pg} lsn={lsn}: crc32c mismatch")
    return h.page, h.flags, raw[HEADER_SIZE:-CRC_SIZE]


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
    if after >= min(upto, keys.MAX_U64):  # nothing can lie above (and 2**64-1 + 1 is no key)
        return b"", None
    start = keys.log_key(pg, after + 1)
    end = keys.log_key(pg, upto) + b"\0" if upto < keys.MAX_U64 else keys.prefix_end(keys.pg_prefix(b"L", pg))
    for key, raw in store.scan(start, end, limit):
        try:
            decode_one(raw)
        except Exception:
            return b"".join(out), keys.log_lsn(key)
        out.append(raw)
    return b"".join(out), None
