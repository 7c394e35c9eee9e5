"""The snapshot phase: stream a page snapshot from one source (trying the others in
turn), load it into an SST file, refetch bad pages elsewhere, then re-base."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import google_crc32c
import structlog

from tidemark_protocol import keys
from tidemark_protocol.records import crc32c

from .. import snapshot as snap
from ..ratelimit import TokenBucket
from ..segments import Segment
from ..state import NodeState
from .errors import HydrationError, SourceError, check_live
from .progress import Progress
from .rebase import install_base
from .sst_loader import SstLoader

log = structlog.get_logger("tidemark.node.hydrate")

READ_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=3, sock_read=30)


async def fetch_snapshot_any(state: NodeState, session: aiohttp.ClientSession, seg: Segment,
                             sources: dict[str, str], bucket: TokenBucket, progress: Progress) -> dict:
    errors = []
    for name, url in sources.items():
        try:
            return await fetch_snapshot(state, session, seg, name, url, sources, bucket, progress)
        except (SourceError, aiohttp.ClientError, TimeoutError, asyncio.IncompleteReadError,
                ValueError, KeyError) as exc:
            errors.append(f"{name}: {exc!r}")
            log.warning("snapshot_source_failed", pg=seg.pg, source=name, error=repr(exc))
            check_live(seg)
    raise HydrationError("no source could serve a snapshot: " + "; ".join(errors))


def _read_chunk(bucket: TokenBucket) -> int:
    """Bytes per network read: a whole frame when uncapped; ~0.1 s of the rate when
    capped, so the cap (and the progress shown) stays smooth within a large frame."""
    return 0 if bucket.rate <= 0 else max(16 << 10, min(snap.FRAME_BYTES, bucket.rate // 10))


async def _read_paced(rd: aiohttp.StreamReader, n: int, bucket: TokenBucket,
                      progress: Progress) -> bytes:
    step = _read_chunk(bucket)
    if not step or n <= step:
        data = await rd.readexactly(n)
        await bucket.consume(n)
        progress.add(n)
        return data
    parts = []
    left = n
    while left:
        k = min(step, left)
        parts.append(await rd.readexactly(k))
        await bucket.consume(k)
        progress.add(k)
        left -= k
    return b"".join(parts)


async def fetch_snapshot(state: NodeState, session: aiohttp.ClientSession, seg: Segment,
                         name: str, url: str, sources: dict[str, str], bucket: TokenBucket,
                         progress: Progress) -> dict:
    pg = seg.pg
    params = {"format": str(snap.FORMAT_FRAMED)}
    loader: SstLoader | None = None
    try:
        async with session.get(f"{url}/v1/segments/{pg}/snapshot", params=params,
                               timeout=READ_TIMEOUT) as resp:
            if resp.status != 200:
                raise SourceError(f"snapshot: HTTP {resp.status} {(await resp.read())[:200]!r}")
            rd = resp.content
            head = await rd.readexactly(8)
            if head[:4] != snap.MAGIC:
                raise SourceError("snapshot: bad magic")
            blob = await rd.readexactly(snap.U32.unpack_from(head, 4)[0])
            (crc,) = snap.U32.unpack(await rd.readexactly(4))
            if crc32c(head + blob) != crc:
                raise SourceError("snapshot: header crc32c mismatch")
            info = json.loads(blob)
            if int(info.get("format", 1)) != snap.FORMAT_FRAMED:
                raise SourceError(f"snapshot: source answered format {info.get('format')}, not 2")
            if int(info["pg"]) != pg or int(info["page_size"]) != seg.layout.page_size:
                raise SourceError(f"snapshot: pg/page size mismatch {info['pg']}/{info['page_size']}")
            s, base = int(info["snapshot_lsn"]), int(info["base_lsn"])
            progress.h.update(snapshot_lsn=s, base_lsn=base)
            progress.snapshot_bytes = int(info["est_bytes"])
            progress.log_records_est = int(info.get("log_records_above", 0))
            progress.update()
            nbytes = 8 + len(blob) + 4
            await bucket.consume(nbytes)
            progress.add(nbytes)
            SstLoader.clear_stale(state.store, pg)
            loader = SstLoader(state, seg, base)
            entries = 0
            while True:
                tag = await rd.readexactly(1)
                if tag == b"F":
                    fhead = await rd.readexactly(snap.FRAME.size)
                    count, blen = snap.FRAME.unpack(fhead)
                    if blen > snap.MAX_FRAME_BODY:
                        raise SourceError(f"snapshot: frame of {blen} bytes")
                    body = await _read_paced(rd, blen + 4, bucket, progress)
                    fcrc = google_crc32c.extend(google_crc32c.value(tag + fhead), body[:-4])
                    if fcrc != int.from_bytes(body[-4:], "little"):
                        raise SourceError("snapshot: frame crc32c mismatch (damaged in transit)")
                    entries += count
                    await loader.put(body[:-4], count)
                elif tag == b"E":
                    tbody = await rd.readexactly(snap.TRAILER.size)
                    (tcrc,) = snap.U32.unpack(await rd.readexactly(4))
                    if crc32c(tag + tbody) != tcrc:
                        raise SourceError("snapshot: trailer crc32c mismatch")
                    count, ts, tb = snap.TRAILER.unpack(tbody)
                    if (count, ts, tb) != (entries, s, base):
                        raise SourceError(f"snapshot: trailer {count, ts, tb} != {entries, s, base}")
                    break
                elif tag == b"X":
                    msg = await rd.readexactly(snap.U32.unpack(await rd.readexactly(4))[0])
                    raise SourceError(f"snapshot aborted by source: {msg.decode(errors='replace')}")
                else:
                    raise SourceError(f"snapshot: unknown frame tag {tag!r}")
            await loader.drain()
        bad = loader.bad
        good = loader.good
        puts: list = []
        others = {k: v for k, v in sources.items() if k != name}
        for page, lsn in bad:
            image = await fetch_page_elsewhere(session, seg, others, page, base, bucket, progress)
            puts.append((keys.version_key(pg, page, lsn), keys.encode_version(image)))
            progress.h["refetched"] += 1
        await _flush(state, seg, puts)  # synced (committer)
        await loader.finish()  # the pages are on disk before the base moves
    finally:
        if loader is not None:
            loader.discard()
    progress.h["pages"] = good + len(bad)
    progress.snapshot_bytes = progress.h["bytes"]
    await install_base(state, seg, info)
    log.info("snapshot_installed", pg=pg, source=name, snapshot_lsn=s, base_lsn=base,
             pages=good + len(bad), refetched=len(bad), scl=seg.durable_scl)
    return info | {"source_name": name}


async def _flush(state: NodeState, seg: Segment, puts: list) -> None:
    if puts:
        check_live(seg)
        await state.committer.submit([], puts=list(puts))
        puts.clear()


async def fetch_page_elsewhere(session: aiohttp.ClientSession, seg: Segment,
                               sources: dict[str, str], page: int, at: int,
                               bucket: TokenBucket, progress: Progress) -> bytes:
    for name, url in sources.items():
        try:
            params = {"at": str(at), "tail": str(at)}
            async with session.get(f"{url}/v1/segments/{seg.pg}/pages/{page}", params=params,
                                   timeout=READ_TIMEOUT) as resp:
                body = await resp.read()
            await bucket.consume(len(body))
            progress.add(len(body))
            if resp.status == 200 and len(body) == seg.layout.page_size:
                return body
            log.info("page_refetch_refused", pg=seg.pg, page=page, source=name, status=resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("page_refetch_failed", pg=seg.pg, page=page, source=name, error=repr(exc))
    raise SourceError(f"no other source could serve page {page} at {at}")
