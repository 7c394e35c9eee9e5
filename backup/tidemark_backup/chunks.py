"""Codec of backup objects (log chunks, snapshots, marks): self-checking with CRC32C.

    b"TMK1" | u32 header_len | header JSON | body | u32 crc32c(everything before)

Header: {"kind", "pg", "start", "end", "epoch", "node", "gen", "created_us", ...}.
Bodies: chunk = concatenated encoded records (each with its own CRC); snap = repeated
(u64 page | page image) of the non-zero pages; marks = repeated (u64 vdl | u64 unix µs);
extent = a bitmap of its span (bit i: page first+i is stored) then those page images in
order; image = JSON list of its extents as [first, lsn, epoch, node, gen] (their keys,
layout.extent_key), [first, lsn] for one with the image's own epoch, node and gen.
A truncated or mangled object fails `decode` and is never restored from.
"""

from __future__ import annotations

import json
import struct

import google_crc32c

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.frames import decode_records
from tidemark_protocol.records import Record, crc32c, iter_encoded

MAGIC = b"TMK1"
_LEN = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_MARK = struct.Struct("<QQ")


class BadObject(Exception):
    pass


def _crc(view: memoryview, end: int, step: int = 1 << 20) -> int:
    """CRC32C of view[:end] in 1 MiB pieces (the codec wants bytes; copying a whole
    snapshot at once costs more than the checksum)."""
    crc = 0
    for off in range(0, end, step):
        crc = google_crc32c.extend(crc, bytes(view[off : min(off + step, end)]))
    return crc


def encode(header: dict, body: bytes) -> bytes:
    head = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    data = MAGIC + _LEN.pack(len(head)) + head + body
    return data + _LEN.pack(crc32c(data))


def decode(data: bytes, kind: str | None = None) -> tuple[dict, bytes]:
    if len(data) < 12 or data[:4] != MAGIC:
        raise BadObject("not a tidemark backup object (bad magic or too short)")
    (stored,) = _LEN.unpack_from(data, len(data) - 4)
    view = memoryview(data)  # no copies of large objects (snapshots are whole PGs)
    if _crc(view, len(data) - 4) != stored:
        raise BadObject("crc32c mismatch (truncated or corrupt object)")
    (hlen,) = _LEN.unpack_from(data, 4)
    if 8 + hlen > len(data) - 4:
        raise BadObject("header length beyond the object")
    try:
        header = json.loads(data[8 : 8 + hlen])
    except ValueError as exc:
        raise BadObject(f"header is not JSON: {exc}") from exc
    if kind is not None and header.get("kind") != kind:
        raise BadObject(f"expected a {kind} object, got {header.get('kind')!r}")
    return header, view[8 + hlen : -4]


def encode_chunk(header: dict, raw_records: list[bytes]) -> bytes:
    return encode({**header, "kind": "chunk", "count": len(raw_records)}, b"".join(raw_records))


def decode_chunk(data: bytes) -> tuple[dict, list[Record]]:
    header, body = decode(data, "chunk")
    try:
        records = decode_records(bytes(body))
    except Exception as exc:
        raise BadObject(f"chunk records do not decode: {exc}") from exc
    if len(records) != header.get("count"):
        raise BadObject("chunk record count mismatch")
    start, end, pg = header["start"], header["end"], header["pg"]
    if any(not (start < r.lsn <= end) or r.pg != pg for r in records):
        raise BadObject("chunk holds records outside its range or PG")
    return header, records


def decode_chunk_fast(data: bytes) -> tuple[dict, list[tuple[int, int, int, bytes]]]:
    """Like decode_chunk, for restore: (lsn, page, flags, payload) per record, relying
    on the object's CRC32C (which covers every record byte) instead of re-checking each
    record's own CRC."""
    header, body = decode(data, "chunk")
    out = []
    start, stop, pg = header["start"], header["end"], header["pg"]
    try:
        for r in iter_encoded(body):
            if r.pg != pg or not (start < r.lsn <= stop):
                raise BadObject(f"chunk record lsn={r.lsn} is not a record of pg {pg} in ({start}, {stop}]")
            out.append((r.lsn, r.page, r.flags, bytes(r.payload)))
    except MalformedFrame as exc:
        raise BadObject(f"chunk records truncated: {exc}") from exc
    if len(out) != header.get("count"):
        raise BadObject("chunk record count or length mismatch")
    return header, out


def encode_snap(header: dict, pages: dict[int, bytes]) -> bytes:
    body = b"".join(_U64.pack(p) + img for p, img in sorted(pages.items()))
    return encode({**header, "kind": "snap", "pages": len(pages)}, body)


def decode_snap(data: bytes) -> tuple[dict, dict[int, bytes]]:
    header, body = decode(data, "snap")
    size = int(header["page_size"])
    step = 8 + size
    if len(body) != step * int(header["pages"]):
        raise BadObject("snapshot body length mismatch")
    pages = {}
    for off in range(0, len(body), step):
        (page,) = _U64.unpack_from(body, off)
        pages[page] = bytes(body[off + 8 : off + step])
    return header, pages


def encode_extent(header: dict, first: int, span: int, pages: dict[int, bytes]) -> bytes:
    """Pages first..first+span-1 that are non-zero (a bitmap instead of a page number
    per page: extents are small, so per-page overhead matters)."""
    bitmap = bytearray((span + 7) // 8)
    for p in pages:
        if not first <= p < first + span:
            raise ValueError(f"page {p} is outside the extent {first}+{span}")
        bitmap[(p - first) // 8] |= 1 << ((p - first) % 8)
    body = bytes(bitmap) + b"".join(img for _p, img in sorted(pages.items()))
    return encode({**header, "kind": "extent", "first": first, "span": span, "pages": len(pages)}, body)


def decode_extent(data: bytes) -> tuple[dict, dict[int, bytes]]:
    header, body = decode(data, "extent")
    try:
        first, span, size, count = (int(header[k]) for k in ("first", "span", "page_size", "pages"))
    except (KeyError, TypeError, ValueError) as exc:
        raise BadObject(f"extent header incomplete: {exc}") from exc
    nbits = (span + 7) // 8
    present = [i for i in range(span) if body[i // 8] >> (i % 8) & 1] if len(body) >= nbits else []
    if len(present) != count or len(body) != nbits + count * size:
        raise BadObject("extent body length mismatch")
    pages = {}
    for n, i in enumerate(present):
        off = nbits + n * size
        pages[first + i] = bytes(body[off : off + size])
    return header, pages


def encode_image(header: dict, extents: list[tuple[int, int, int, str, int]], pages: int,
                 owner: tuple[int, str, int]) -> bytes:
    """`owner` = the image's own (epoch, node, gen): an extent written by the same
    uploader is listed as [first, lsn] only."""
    body = json.dumps([[f, lsn] if (ep, node, gen) == owner else [f, lsn, ep, node, gen]
                       for f, lsn, ep, node, gen in extents], separators=(",", ":")).encode()
    return encode({**header, "kind": "image", "pages": pages}, body)


def decode_image(data: bytes, owner: tuple[int, str, int]) -> tuple[dict, list[tuple[int, int, int, str, int]]]:
    header, body = decode(data, "image")
    try:
        refs = [(int(e[0]), int(e[1]), *owner) if len(e) == 2 else
                (int(e[0]), int(e[1]), int(e[2]), str(e[3]), int(e[4])) for e in json.loads(bytes(body))]
    except (ValueError, TypeError, IndexError) as exc:
        raise BadObject(f"image extent list does not decode: {exc}") from exc
    return header, refs


def encode_marks(header: dict, marks: list[tuple[int, int]]) -> bytes:
    return encode({**header, "kind": "marks", "count": len(marks)},
                  b"".join(_MARK.pack(v, t) for v, t in marks))


def decode_marks(data: bytes) -> tuple[dict, list[tuple[int, int]]]:
    header, body = decode(data, "marks")
    if len(body) != _MARK.size * int(header["count"]):
        raise BadObject("marks body length mismatch")
    return header, [_MARK.unpack_from(body, i) for i in range(0, len(body), _MARK.size)]
