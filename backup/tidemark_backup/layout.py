"""Object keys of a backup (pure). The layout is self-describing: every fact restore needs
is in a key or in an object's own header, and keys are unique per writer of them (node
name + generation), so no object is ever overwritten.

    {root}/format.json                                   {"format": "tidemark-backup", "version": N}
                                                         (N: the format of the bucket's first writer)
    {root}/nodes/{node}/g{gen:06d}.json                  a node generation's registration (fencing)
    {root}/pg-{pg:05d}/manifest-{node}-g{gen:06d}.json   per-PG manifest: layout, format, uploader
    {root}/pg-{pg:05d}/log/{start:020d}-{end:020d}-e{epoch:06d}-{node}-g{gen:06d}.chunk
                                                         log records of the PG with start < lsn <= end
    {root}/pg-{pg:05d}/snap/{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}.snap
                                                         the PG's non-zero pages as of lsn (a full
                                                         base image: format 1, still read)
    {root}/pg-{pg:05d}/img/{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}-p{pages:010d}.img
                                                         an incremental base image as of lsn: the
                                                         extents holding its pages (format 2);
                                                         pages = its non-zero pages
    {root}/pg-{pg:05d}/ext/{first:010d}-{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}.ext
                                                         an extent: the non-zero pages of pages
                                                         first.. (one extent span) as of lsn,
                                                         shared by every image it did not change for
    {root}/marks/{node}-g{gen:06d}-{seq:010d}-v{lo:020d}-{hi:020d}.marks
                                                         VDL marks (vdl, unix µs) the node received,
                                                         lo..hi = their VDL range (retention prunes by
                                                         it without reading); keys without the range
                                                         (older uploads) stay valid
    {root}/manual/{name}/pg-{pg:05d}.snap, manifest.json a manual snapshot (manifest written last)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Format 2 only adds object kinds (incremental images, extents) to format 1's key scheme,
# so the root keeps format 1's name and a format-1 bucket is read as it is.
FORMAT_VERSION = 2
ROOT = "tidemark-backup/v1"
_NAME = r"[A-Za-z0-9_.\-]+"

_CHUNK = re.compile(
    rf"^pg-(\d{{5}})/log/(\d{{20}})-(\d{{20}})-e(\d{{6}})-({_NAME})-g(\d{{6}})\.chunk$")
_SNAP = re.compile(rf"^pg-(\d{{5}})/snap/(\d{{20}})-e(\d{{6}})-({_NAME})-g(\d{{6}})\.snap$")
_IMAGE = re.compile(
    rf"^pg-(\d{{5}})/img/(\d{{20}})-e(\d{{6}})-({_NAME})-g(\d{{6}})-p(\d{{10}})\.img$")
_EXTENT = re.compile(
    rf"^pg-(\d{{5}})/ext/(\d{{10}})-(\d{{20}})-e(\d{{6}})-({_NAME})-g(\d{{6}})\.ext$")
_MARKS = re.compile(rf"^marks/({_NAME})-g(\d{{6}})-(\d{{10}})(?:-v(\d{{20}})-(\d{{20}}))?\.marks$")
_NODE = re.compile(rf"^nodes/({_NAME})/g(\d{{6}})\.json$")
_MANIFEST = re.compile(rf"^pg-(\d{{5}})/manifest-({_NAME})-g(\d{{6}})\.json$")
_MANUAL = re.compile(rf"^manual/({_NAME})/(manifest\.json|pg-(\d{{5}})\.snap)$")


def join(prefix: str, rel: str) -> str:
    return f"{prefix.strip('/')}/{ROOT}/{rel}" if prefix.strip("/") else f"{ROOT}/{rel}"


def format_key() -> str:
    return "format.json"


def node_key(node: str, gen: int) -> str:
    return f"nodes/{node}/g{gen:06d}.json"


def manifest_key(pg: int, node: str, gen: int) -> str:
    return f"pg-{pg:05d}/manifest-{node}-g{gen:06d}.json"


def pg_dir(pg: int) -> str:
    return f"pg-{pg:05d}/"


def chunk_key(pg: int, start: int, end: int, epoch: int, node: str, gen: int) -> str:
    return f"pg-{pg:05d}/log/{start:020d}-{end:020d}-e{epoch:06d}-{node}-g{gen:06d}.chunk"


def snap_key(pg: int, lsn: int, epoch: int, node: str, gen: int) -> str:
    return f"pg-{pg:05d}/snap/{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}.snap"


def image_key(pg: int, lsn: int, epoch: int, node: str, gen: int, pages: int) -> str:
    return f"pg-{pg:05d}/img/{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}-p{pages:010d}.img"


def extent_key(pg: int, first: int, lsn: int, epoch: int, node: str, gen: int) -> str:
    return f"pg-{pg:05d}/ext/{first:010d}-{lsn:020d}-e{epoch:06d}-{node}-g{gen:06d}.ext"


def extent_dir(pg: int) -> str:
    return f"pg-{pg:05d}/ext/"


def marks_key(node: str, gen: int, seq: int, lo: int | None = None, hi: int | None = None) -> str:
    if lo is None or hi is None:
        return f"marks/{node}-g{gen:06d}-{seq:010d}.marks"
    return f"marks/{node}-g{gen:06d}-{seq:010d}-v{lo:020d}-{hi:020d}.marks"


def manual_snap_key(name: str, pg: int) -> str:
    return f"manual/{name}/pg-{pg:05d}.snap"


def manual_manifest_key(name: str) -> str:
    return f"manual/{name}/manifest.json"


@dataclass(frozen=True, slots=True)
class Obj:
    """A parsed object key (relative to the root) plus its size and modification time."""

    key: str
    kind: str  # chunk | snap | image | extent | marks | node | manifest | manual | format | unknown
    size: int = 0
    mtime: float = 0.0
    pg: int = -1
    start: int = 0  # chunk: covered LSNs (start, end]; snap, image, extent: start == end == lsn;
    end: int = 0  # marks: VDL range [start, end] (end == -1: unknown, an older key)
    epoch: int = 0
    node: str = ""
    gen: int = 0
    seq: int = 0
    name: str = ""  # manual snapshot name
    first: int = 0  # extent: its first page
    pages: int = -1  # image: its non-zero pages (-1: not an image)

    @property
    def is_base(self) -> bool:
        """A base image a restore can start from: a full snapshot or an incremental image."""
        return self.kind in ("snap", "image")


def parse(key: str, size: int = 0, mtime: float = 0.0) -> Obj:
    if m := _CHUNK.match(key):
        pg, s, e, ep, node, gen = m.groups()
        if int(s) >= int(e):
            return Obj(key, "unknown", size, mtime)
        return Obj(key, "chunk", size, mtime, int(pg), int(s), int(e), int(ep), node, int(gen))
    if m := _SNAP.match(key):
        pg, lsn, ep, node, gen = m.groups()
        return Obj(key, "snap", size, mtime, int(pg), int(lsn), int(lsn), int(ep), node, int(gen))
    if m := _IMAGE.match(key):
        pg, lsn, ep, node, gen, pages = m.groups()
        return Obj(key, "image", size, mtime, int(pg), int(lsn), int(lsn), int(ep), node, int(gen),
                   pages=int(pages))
    if m := _EXTENT.match(key):
        pg, first, lsn, ep, node, gen = m.groups()
        return Obj(key, "extent", size, mtime, int(pg), int(lsn), int(lsn), int(ep), node, int(gen),
                   first=int(first))
    if m := _MARKS.match(key):
        node, gen, seq, lo, hi = m.groups()
        if lo is not None and int(lo) > int(hi):
            return Obj(key, "unknown", size, mtime)
        return Obj(key, "marks", size, mtime, start=int(lo or 0), end=int(hi) if hi else -1,
                   node=node, gen=int(gen), seq=int(seq))
    if m := _NODE.match(key):
        node, gen = m.groups()
        return Obj(key, "node", size, mtime, node=node, gen=int(gen))
    if m := _MANIFEST.match(key):
        pg, node, gen = m.groups()
        return Obj(key, "manifest", size, mtime, int(pg), node=node, gen=int(gen))
    if m := _MANUAL.match(key):
        name, _what, pg = m.groups()
        return Obj(key, "manual", size, mtime, int(pg) if pg else -1, name=name)
    if key == format_key():
        return Obj(key, "format", size, mtime)
    return Obj(key, "unknown", size, mtime)
