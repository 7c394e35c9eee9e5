"""One hydration, phase by phase (see the package docstring)."""

from __future__ import annotations

import asyncio

import structlog

from tidemark_protocol.hydration import HydrationState

from ..ratelimit import TokenBucket
from ..segments import Segment
from ..state import NodeState
from ..tls import peer_session
from .catch_up import catch_up
from .log_fetch import fetch_log, statuses
from .progress import Progress
from .snapshot_fetch import fetch_snapshot_any

log = structlog.get_logger("tidemark.node.hydrate")


async def hydrate(state: NodeState, seg: Segment, sources: dict[str, str], bandwidth: int,
                  progress: Progress) -> None:
    bucket = TokenBucket(bandwidth)
    try:
        await state.committer.submit([seg])  # the meta says "hydrating" (see load_segment)
        async with peer_session(state.settings) as session:
            # The snapshot from the most materialized source first (stable: given order).
            found = await statuses(session, seg, sources)
            ranked = sorted(sources, key=lambda n: (n not in found,
                                                    -int(found.get(n, {}).get("materialized_lsn", 0))))
            ordered = {n: sources[n] for n in ranked}
            info = await fetch_snapshot_any(state, session, seg, ordered, bucket, progress)
            progress.phase(HydrationState.LOG)
            await fetch_log(state, session, seg, sources, bucket, progress, info)
            progress.phase(HydrationState.CATCHING_UP)
            await catch_up(state, session, seg, sources, bucket, progress, info)
        progress.finish()
        if not seg.deleted:
            await state.committer.submit([seg])
        log.info("hydration_done", pg=seg.pg, scl=seg.durable_scl, bytes=progress.h["bytes"],
                 seconds=progress.h["seconds"], throttled=round(bucket.waited, 3))
    except asyncio.CancelledError:
        progress.fail("cancelled")
        raise
    except Exception as exc:
        progress.fail(f"{type(exc).__name__}: {exc}")
        log.error("hydration_failed", pg=seg.pg, error=repr(exc))
