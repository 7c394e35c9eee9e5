"""The log phase: records above the snapshot fetched from several sources in parallel
(and `fetch_range`, the CRC-checked pull the catch-up phase uses too)."""

from __future__ import annotations

import asyncio
import math

import aiohttp
import structlog

from tidemark_protocol.errors import ProtocolError
from tidemark_protocol.records import split_records

from ..gossip import peer_status
from ..intake import ingest
from ..ratelimit import TokenBucket
from ..segments import Segment
from ..state import NodeState
from .errors import HydrationError, SourceError, check_live
from .progress import Progress
from .snapshot_fetch import READ_TIMEOUT

log = structlog.get_logger("tidemark.node.hydrate")


async def statuses(session: aiohttp.ClientSession, seg: Segment,
                   sources: dict[str, str]) -> dict[str, dict]:
    """The PG's status on each source at the segment's volume epoch (others left out)."""
    names = list(sources)
    got = await asyncio.gather(*(peer_status(session, sources[n]) for n in names))
    out = {}
    for name, st in zip(names, got, strict=True):
        peer = st.get(seg.pg)
        if peer and int(peer.get("volume_epoch", -1)) == seg.meta.volume_epoch:
            out[name] = peer
    return out


async def fetch_range(state: NodeState, session: aiohttp.ClientSession, seg: Segment, a: int,
                      b: int, order: list[tuple[str, str]], bucket: TokenBucket,
                      progress: Progress, limit: int) -> None:
    """Records in (a, b] from the sources in `order` (first preferred), CRC-checked."""
    after = a
    i = 0
    failures = 0
    while after < b:
        check_live(seg)
        name, url = order[i % len(order)]
        params = {"after": str(after), "upto": str(b), "limit": str(limit)}
        try:
            async with session.get(f"{url}/v1/segments/{seg.pg}/records", params=params,
                                   timeout=READ_TIMEOUT) as resp:
                body = await resp.read()
                corrupt = resp.headers.get("X-Tidemark-Corrupt-LSN")
                if resp.status != 200:
                    raise SourceError(f"records: HTTP {resp.status} {body[:200]!r}")
            await bucket.consume(len(body))
            try:
                recs = split_records(body)
            except ProtocolError as exc:  # damaged in transit: the whole answer goes
                progress.add(len(body))
                raise SourceError(f"records: {exc}") from exc
            recs = [r for r in recs if r.pg == seg.pg and after < r.lsn <= b]
            progress.add(len(body), len(recs))
            if recs:
                check_live(seg)
                await ingest(state, seg, recs)
                after = recs[-1].lsn
            if corrupt is not None:
                raise SourceError(f"records: source copy of lsn {corrupt} is corrupt")
            failures = 0
            if len(recs) < limit:
                return
        except (SourceError, aiohttp.ClientError, TimeoutError) as exc:
            failures += 1
            progress.h["refetched"] += 1
            log.info("records_refetch", pg=seg.pg, source=name, after=after, upto=b, error=str(exc))
            if failures >= 2 * len(order):
                raise HydrationError(f"no source could serve records ({after}, {b}]: {exc}") from exc
            i += 1
            if failures >= len(order):
                await asyncio.sleep(0.2)


async def fetch_log(state: NodeState, session: aiohttp.ClientSession, seg: Segment,
                    sources: dict[str, str], bucket: TokenBucket, progress: Progress,
                    info: dict) -> None:
    s = int(info["snapshot_lsn"])
    found = await statuses(session, seg, sources)
    if not found:
        raise HydrationError(f"no source answers for pg {seg.pg} at volume epoch {seg.meta.volume_epoch}")
    usable = [(n, sources[n]) for n, st in found.items() if int(st.get("scl", 0)) >= s]
    if not usable:
        progress.h["target_lsn"] = s
        return
    target = min(int(found[n]["scl"]) for n, _u in usable)
    progress.h["target_lsn"] = target
    if target <= s:
        return
    src_scl = int(info.get("scl", s))
    est = int(info.get("log_records_above", 0))
    if src_scl > s and target > src_scl:
        est = int(est * (target - s) / (src_scl - s))
    progress.log_records_est = est
    progress.update()
    limit = state.settings.gossip_chunk
    n_chunks = max(2 * len(usable), math.ceil(est / limit) if est else 1)
    width = max(1, math.ceil((target - s) / n_chunks))
    queue: asyncio.Queue = asyncio.Queue()
    lo = s
    while lo < target:
        queue.put_nowait((lo, min(target, lo + width)))
        lo += width

    async def worker(k: int) -> None:
        order = usable[k:] + usable[:k]
        while not queue.empty():
            a, b = queue.get_nowait()
            await fetch_range(state, session, seg, a, b, order, bucket, progress, limit)

    try:
        async with asyncio.TaskGroup() as tg:  # one failing worker stops the others
            for k in range(len(usable)):
                tg.create_task(worker(k))
    except* HydrationError as eg:
        raise eg.exceptions[0] from None
    log.info("hydration_log_fetched", pg=seg.pg, after=s, upto=target, sources=[n for n, _ in usable],
             records=progress.log_records, scl=seg.durable_scl)
