"""`POST /v1/segments/{pg}/hydrate`: start a rebuild of a freshly created segment."""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from tidemark_protocol.errors import MalformedFrame
from tidemark_protocol.hydration import RUNNING, HydrationState

from ..httputil import read_json, segment_of
from ..state import STATE, TASKS, NodeState
from .progress import Progress
from .task import hydrate

log = structlog.get_logger("tidemark.node.hydrate")


async def post_hydrate(request: web.Request) -> web.Response:
    state: NodeState = request.app[STATE]
    seg = segment_of(state, request)
    body = await read_json(request)
    sources = body.get("sources")
    if not isinstance(sources, dict) or not sources or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in sources.items()
    ):
        raise MalformedFrame("sources must map at least one node name to its URL")
    try:
        bandwidth = int(body.get("bandwidth_bytes_per_s", 0) or 0)
    except (TypeError, ValueError) as exc:
        raise MalformedFrame("bandwidth_bytes_per_s must be an integer") from exc
    if bandwidth < 0:
        raise MalformedFrame("bandwidth_bytes_per_s must be >= 0")
    sources = {k: v.rstrip("/") for k, v in sources.items() if k != state.name}
    if not sources:
        raise MalformedFrame("sources must name at least one other node")
    current = seg.hydration_state()
    if current in RUNNING:
        return web.json_response({"error": "hydration_running", "message": f"pg {seg.pg} is hydrating",
                                  "hydration": seg.hydration}, status=409)
    if current == HydrationState.DONE and not body.get("force"):
        # Idempotent for a repairer resuming after a restart: the rebuild already finished.
        return web.json_response({"pg": seg.pg, "hydration": seg.hydration}, status=200)
    progress = Progress(seg, sources, bandwidth)
    task = asyncio.get_running_loop().create_task(hydrate(state, seg, sources, bandwidth, progress),
                                                  name=f"hydrate-{seg.pg}")
    tasks = request.app[TASKS]
    tasks[:] = [t for t in tasks if not t.done()]
    tasks.append(task)
    log.info("hydration_started", pg=seg.pg, sources=sorted(sources), bandwidth=bandwidth)
    return web.json_response({"pg": seg.pg, "hydration": seg.hydration}, status=202)
