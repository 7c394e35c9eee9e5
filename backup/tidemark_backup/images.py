"""Base images of a PG: the one home of how they are split, shared and read.

Format 1 wrote every base image as one full snapshot (`.snap`, every non-zero page).
Format 2 writes *incremental* images: a PG's pages are cut into fixed extents (`span`
pages each, aligned to the PG's first page); an extent object holds one extent's
non-zero pages as of an LSN, and an image (`.img`) lists the extents that make up the PG
at its LSN. A new image writes only the extents whose content changed since the image
it follows and references the others, so the bucket holds each extent version once
(Aurora's base image "grows by changed pages"). Both kinds are bases (layout.Obj.is_base);
restore and retention read both.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from . import chunks, layout
from .layout import Obj
from .objstore import ObjStore

# An extent's span in bytes (the default of the nodes' --backup-extent-kib): what one
# changed page costs to re-store, against the objects a restore fetches (256 MiB of pages:
# 256 objects at 1 MiB, 4,096 at 64 KiB, which made `bench backup`'s restore 3x slower).
EXTENT_BYTES = 1 << 20

Ref = tuple[int, int, int, str, int]  # an extent's (first, lsn, epoch, node, gen)


def span_of(page_size: int, extent_bytes: int = EXTENT_BYTES) -> int:
    return max(1, extent_bytes // page_size)


def ref_key(pg: int, ref: Ref) -> str:
    first, lsn, epoch, node, gen = ref
    return layout.extent_key(pg, first, lsn, epoch, node, gen)


def split(pages: Mapping[int, bytes], first_page: int, span: int) -> dict[int, dict[int, bytes]]:
    """The PG's non-zero pages by extent (first page of the extent -> its pages)."""
    out: dict[int, dict[int, bytes]] = {}
    for p, img in pages.items():
        out.setdefault(first_page + (p - first_page) // span * span, {})[p] = img
    return out


def digest(pages: Mapping[int, bytes]) -> bytes:
    h = hashlib.sha256()
    for p, img in sorted(pages.items()):
        h.update(p.to_bytes(8, "little"))
        h.update(img)
    return h.digest()


@dataclass
class Plan:
    """What an image at `lsn` writes (`new`: first -> pages) and lists (`refs`), and the
    digests that let the next image find what it can share."""

    new: dict[int, dict[int, bytes]]
    refs: list[Ref]
    digests: dict[int, tuple[Ref, bytes]]
    pages: int


def plan(pages: Mapping[int, bytes], first_page: int, span: int, lsn: int, epoch: int, node: str,
         gen: int, parent: Mapping[int, tuple[Ref, bytes]], existing: set[str], pg: int) -> Plan:
    """Share every extent whose content equals the parent image's and whose object is
    still in the bucket (`existing`, a listing taken just before); write the rest."""
    new: dict[int, dict[int, bytes]] = {}
    refs: list[Ref] = []
    digests: dict[int, tuple[Ref, bytes]] = {}
    for first, ext in sorted(split(pages, first_page, span).items()):
        d = digest(ext)
        old = parent.get(first)
        if old is not None and old[1] == d and ref_key(pg, old[0]) in existing:
            ref = old[0]
        else:
            ref = (first, lsn, epoch, node, gen)
            new[first] = ext
        refs.append(ref)
        digests[first] = (ref, d)
    return Plan(new, refs, digests, len(pages))


def image_refs(store: ObjStore, image: Obj) -> list[str]:
    """Keys of the extents an image lists (reads the image object)."""
    hdr, refs = chunks.decode_image(store.get(image.key), (image.epoch, image.node, image.gen))
    if hdr.get("pg") != image.pg or hdr.get("lsn") != image.start or hdr.get("pages") != image.pages:
        raise chunks.BadObject("image header does not match its key")
    return [ref_key(image.pg, r) for r in refs]


def load_base(store: ObjStore, base: Obj, mapper: Callable[..., Iterable] = map,
              on_bytes: Callable[[int], None] = lambda n: None) -> dict[int, bytes]:
    """The non-zero pages of a base image (full snapshot or incremental image); raises
    BadObject or KeyError (a missing extent) if any part fails its checks. `mapper`
    fetches extents (an executor's map: in parallel)."""
    data = store.get(base.key)
    on_bytes(len(data))
    if base.kind == "snap":
        hdr, pages = chunks.decode_snap(data)
        if hdr.get("pg") != base.pg or hdr.get("lsn") != base.start:
            raise chunks.BadObject("snapshot header does not match its key")
        return pages
    hdr, refs = chunks.decode_image(data, (base.epoch, base.node, base.gen))
    if hdr.get("pg") != base.pg or hdr.get("lsn") != base.start or hdr.get("pages") != base.pages:
        raise chunks.BadObject("image header does not match its key")

    def one(ref: Ref) -> dict[int, bytes]:
        raw = store.get(ref_key(base.pg, ref))
        on_bytes(len(raw))
        ehdr, ext = chunks.decode_extent(raw)
        if (ehdr.get("pg"), ehdr.get("first"), ehdr.get("lsn")) != (base.pg, ref[0], ref[1]) or ref[1] > base.start:
            raise chunks.BadObject(f"extent {ref_key(base.pg, ref)} does not match its key or image")
        return ext

    pages: dict[int, bytes] = {}
    for ext in mapper(one, refs):
        pages.update(ext)
    if len(pages) != base.pages:
        raise chunks.BadObject(f"image {base.key} lists {base.pages} pages, its extents hold {len(pages)}")
    return pages

