"""Background gossip: fill holes and catch up from peers.

Each round asks every known peer for its /v1/status (one request per peer, covering
all PGs), then for each segment with holes or behind a peer at the same volume epoch,
pulls `records?after=SCL` from the most advanced peer and feeds them through `ingest`
(CRC-checked, truncation-filtered, durable before they count).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

from tidemark_protocol.errors import ProtocolError
from tidemark_protocol.records import split_records

from .intake import ingest
from .segments import Segment
from .state import NodeState
from .tls import peer_session

log = structlog.get_logger("tidemark.node.gossip")

_TIMEOUT = aiohttp.ClientTimeout(total=10, connect=2)


async def peer_status(session: aiohttp.ClientSession, url: str) -> dict[int, dict]:
    try:
        async with session.get(f"{url}/v1/status", timeout=aiohttp.ClientTimeout(total=3)) as resp:
            if resp.status != 200:
                return {}
            body = await resp.json()
            return {int(s["pg"]): s for s in body.get("segments", [])}
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError):
        return {}


async def pull(state: NodeState, session: aiohttp.ClientSession, seg: Segment, url: str, upto: int) -> int:
    """Pull records above our SCL from one peer until caught up to `upto` (or no progress)."""
    total = 0
    while not seg.deleted:
        after = seg.durable_scl
        if after >= upto:
            break
        params = {"after": str(after), "upto": str(upto), "limit": str(state.settings.gossip_chunk)}
        async with session.get(f"{url}/v1/segments/{seg.pg}/records", params=params, timeout=_TIMEOUT) as resp:
            if resp.status != 200:
                log.info("gossip_refused", pg=seg.pg, peer=url, status=resp.status)
                break
            body = await resp.read()
        if not body:
            break
        try:
            records = split_records(body)
        except ProtocolError as exc:
            log.warning("gossip_bad_records", pg=seg.pg, peer=url, error=str(exc))
            break
        n = await ingest(state, seg, [r for r in records if r.pg == seg.pg])
        total += n
        if seg.durable_scl <= after:
            break  # the peer could not fill our gap from here; try another round
        await asyncio.sleep(0)
    if total:
        state.telemetry.gossip_pulled.add(total)
        log.info("gossip_pulled", pg=seg.pg, peer=url, records=total, scl=seg.durable_scl)
    return total


def note_peer_progress(state: NodeState, statuses: dict[str, dict[int, dict]], now: float) -> None:
    """Remember each fellow member's SCL and when it last moved (log GC holds log for a
    member that is still catching up, gc.peer_hold). An unreachable member keeps its
    last entry, so its hold runs out gc_peer_hold seconds after it last moved."""
    for seg in state.segments.values():
        for name in seg.membership.all_members:
            peer = statuses.get(name, {}).get(seg.pg)
            if name == state.name or not peer or int(peer.get("volume_epoch", -1)) != seg.meta.volume_epoch:
                continue
            scl = int(peer.get("scl", 0))
            last = state.peer_progress.get((seg.pg, name))
            if last is None or last[0] != scl:
                state.peer_progress[(seg.pg, name)] = (scl, now)


async def gossip_round(state: NodeState, session: aiohttp.ClientSession) -> int:
    urls: dict[str, str] = {}
    for seg in state.segments.values():
        for name in seg.membership.all_members:
            url = state.peer_url(seg, name) if name != state.name else None
            if url:
                urls[name] = url
    statuses = dict(
        zip(urls, await asyncio.gather(*(peer_status(session, u) for u in urls.values())), strict=True)
    )
    note_peer_progress(state, statuses, time.monotonic())
    pulled = 0
    for seg in list(state.segments.values()):
        if seg.hydrating():
            continue  # its base comes from a snapshot first (hydration/)
        best: tuple[int, str] | None = None
        for name in seg.membership.all_members:
            peer = statuses.get(name, {}).get(seg.pg)
            if not peer or int(peer.get("volume_epoch", -1)) != seg.meta.volume_epoch:
                continue
            pscl = int(peer.get("scl", 0))
            if pscl > seg.durable_scl and (best is None or pscl > best[0]):
                best = (pscl, urls[name])
        if best is None:
            continue
        try:
            pulled += await pull(state, session, seg, best[1], best[0])
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("gossip_failed", pg=seg.pg, peer=best[1], error=str(exc))
        await asyncio.sleep(0)
    return pulled


async def gossip_loop(state: NodeState) -> None:
    async with peer_session(state.settings) as session:
        while True:
            await asyncio.sleep(state.settings.gossip_interval)
            try:
                await gossip_round(state, session)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("gossip_error")
