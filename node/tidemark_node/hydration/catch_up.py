"""The last phase: pull until the SCL reaches what the peers had when it began."""

from __future__ import annotations

import asyncio

import aiohttp

from ..ratelimit import TokenBucket
from ..segments import Segment
from ..state import NodeState
from .errors import HydrationError
from .log_fetch import fetch_range, statuses
from .progress import Progress


async def catch_up(state: NodeState, session: aiohttp.ClientSession, seg: Segment,
                   sources: dict[str, str], bucket: TokenBucket, progress: Progress,
                   info: dict) -> None:
    """Pull until the SCL reaches what the peers had when this phase began."""
    s = int(info["snapshot_lsn"])
    peers = dict(sources)
    for name in seg.membership.all_members:
        url = state.peer_url(seg, name) if name != state.name else None
        if url:
            peers.setdefault(name, url)
    found = await statuses(session, seg, peers)
    if not found:
        return
    target = max(int(st.get("scl", 0)) for st in found.values())
    progress.h["target_lsn"] = max(target, progress.h["target_lsn"] or 0)
    order = sorted(((n, peers[n]) for n in found), key=lambda nu: -int(found[nu[0]]["scl"]))
    for _ in range(50):
        if seg.durable_scl >= target:
            return
        # No record of the PG lies in (base, S]: asking above S is the same and is
        # never below a source's log GC horizon (its snapshot pin held it at S).
        await fetch_range(state, session, seg, max(seg.durable_scl, s), target, order, bucket,
                          progress, state.settings.gossip_chunk)
        if seg.durable_scl >= target:
            return
        await asyncio.sleep(0.1)  # holes: records still arriving at the sources
    raise HydrationError(f"SCL {seg.durable_scl} did not reach the peers' {target}")
