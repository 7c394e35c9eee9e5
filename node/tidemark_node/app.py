"""HTTP routes (see docs/wire.md) and the node's start/stop sequence."""

from __future__ import annotations

import asyncio
import json
import os

import structlog
from aiohttp import WSCloseCode, web

from tidemark_protocol import keys
from tidemark_protocol.errors import (
    CorruptRecord,
    MalformedFrame,
    NeedsSeal,
    ProtocolError,
    StaleEpoch,
    Truncated,
    UnknownSegment,
)
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.quorum import Membership
from tidemark_protocol.records import peek_header

from . import reads, state_gauges
from .auth import authorize
from .commit import Committer
from .faults import add_fault_routes
from .gc import gc_loop
from .gossip import gossip_loop
from .httputil import error, int_param, read_json, refuse, segment_of
from .hydration.handler import post_hydrate
from .install import post_install
from .intake import log_stream
from .materialize import materialize_loop
from .scrub import scrub_loop
from .scrubber import Scrubber
from .segments import drop_keys, load_segment, new_segment
from .snapshot import get_snapshot
from .state import STATE, TASKS, NodeState, Settings
from .store import Store
from .telemetry import Telemetry
from .uploader import start_uploader

log = structlog.get_logger("tidemark.node")


ALWAYS_SERVED = frozenset({"/livez", "/readyz", "/metrics"})


@web.middleware
async def protocol_errors(request: web.Request, handler):
    """Every refusal is a JSON error; nothing unexpected takes the process down."""
    if not request.app[STATE].ready and request.path not in ALWAYS_SERVED:
        return error(503, "not_ready", "the node is still loading its segments")
    try:
        return await handler(request)
    except ProtocolError as exc:
        return refuse(exc)
    except web.HTTPException:
        raise
    except Exception as exc:
        log.exception("handler_error", path=request.path)
        return error(500, "internal", repr(exc))


# -- health and status --------------------------------------------------------------------
async def livez(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if state.ready and state.committer.failed is None:
        return web.Response(text="ready")
    why = state.load_error or (f"storage failed: {state.committer.failed}" if state.committer.failed else "loading")
    return web.Response(status=503, text=f"not ready: {why}")


async def status(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response(
        {
            "node": state.name,
            "zone": state.settings.zone,
            "generation": state.generation,
            "disk_bytes": state.store.disk_bytes(),
            "segments": [s.status() for s in sorted(state.segments.values(), key=lambda s: s.pg)],
            "backup": state.backup_status.to_json() if state.backup_status is not None else None,
            **state.scrubber.status(),
        }
    )


async def metrics(request: web.Request) -> web.Response:
    body, ctype = request.app[STATE].telemetry.render()
    return web.Response(body=body, headers={"Content-Type": ctype})


# -- segment admin --------------------------------------------------------------------------
def _peers(body: dict) -> dict[str, str]:
    peers = body.get("peers") or {}
    if not isinstance(peers, dict) or not all(isinstance(v, str) for v in peers.values()):
        raise MalformedFrame("peers must map names to URLs")
    return {str(k): v.rstrip("/") for k, v in peers.items()}


async def put_segment(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        pg = int(request.match_info["pg"])
    except ValueError as exc:
        raise MalformedFrame("pg must be an integer") from exc
    body = await read_json(request)
    try:
        layout = VolumeLayout.from_json(body["layout"])
        membership = Membership.from_json(body["membership"])
        volume_epoch = int(body.get("volume_epoch", 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedFrame(f"bad segment spec: {exc!r}") from exc
    if not 0 <= pg < layout.pg_count:
        raise MalformedFrame(f"pg {pg} outside the layout's {layout.pg_count} PGs")
    peers = _peers(body)
    seg = state.segments.get(pg)
    if seg is None:
        seg = new_segment(pg, layout, membership, peers, volume_epoch)
        state.segments[pg] = seg
        log.info("segment_created", pg=pg, volume_epoch=volume_epoch, membership_epoch=membership.epoch)
    elif membership.epoch >= seg.membership.epoch:
        newer = membership.epoch > seg.membership.epoch
        seg.membership = membership
        seg.log.note_membership_epoch(membership.epoch)  # frames of older epochs: stale_membership
        seg.peers.update(peers)
        if newer:
            log.info("segment_membership", pg=pg, membership_epoch=membership.epoch,
                     members=list(membership.all_members))
    await state.committer.submit([seg])
    return web.json_response({"pg": pg, "scl": seg.durable_scl})


async def delete_segment(request: web.Request) -> web.Response:
    state = request.app[STATE]
    seg = segment_of(state, request)
    seg.deleted = True  # hydration, scrub and background steps check it and stop
    del state.segments[seg.pg]
    for task in request.app[TASKS]:
        if task.get_name() == f"hydrate-{seg.pg}" and not task.done():
            task.cancel()
    ranges = [(keys.pg_prefix(t, seg.pg), keys.prefix_end(keys.pg_prefix(t, seg.pg))) for t in (b"L", b"X", b"V")]
    await state.committer.submit([], deletes=[keys.meta_key(seg.pg)], ranges=ranges)
    log.info("segment_deleted", pg=seg.pg)
    return web.json_response({"pg": seg.pg, "deleted": True})


async def put_peers(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.peers.update(_peers({"peers": await read_json(request)}))
    await state.committer.submit([], puts=[(state.peers_key(), state.peers_bytes())])
    return web.json_response({"peers": state.peers})


# -- recovery and sealing --------------------------------------------------------------------
async def report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    seg = segment_of(state, request)
    meta = seg.meta
    floor = meta.floor

    def scan() -> list[list[int]]:
        out = []
        prefix = keys.pg_prefix(b"L", seg.pg)
        for _key, raw in state.store.scan(keys.log_key(seg.pg, floor + 1), keys.prefix_end(prefix)):
            h = peek_header(raw)
            out.append([h.lsn, h.prev_lsn_in_pg, h.flags])
        return out

    records = await asyncio.get_running_loop().run_in_executor(state.reader, scan)
    return web.json_response(
        {
            "segment": state.name,
            "volume_epoch": meta.volume_epoch,
            "scl": seg.durable_scl,
            "floor": floor,
            "vdl_hint": meta.vdl_hint,
            "truncations": [list(r) for r in meta.truncations],
            "records": records,
        }
    )


async def seal(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await read_json(request)
    try:
        epoch = int(body["volume_epoch"])
        truncations = [(int(a), int(b)) for a, b in body.get("truncations", [])]
        pgs = [int(p) for p in body["pgs"]] if body.get("pgs") is not None else sorted(state.segments)
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedFrame(f"bad seal request: {exc!r}") from exc
    if any(a >= b for a, b in truncations):
        raise MalformedFrame("each truncation range must be (start, end] with start < end")
    segs = []
    for pg in pgs:
        seg = state.segments.get(pg)
        if seg is None:
            raise UnknownSegment(f"pg {pg} is not hosted here")
        if epoch < seg.meta.volume_epoch:
            raise StaleEpoch(f"pg {pg}: seal epoch {epoch} < {seg.meta.volume_epoch}")
        for start, end in truncations:
            if (start, end) not in seg.meta.truncations and start < seg.meta.floor:
                # The chain below the floor is forgotten because it is at or below a VDL
                # the writer announced; truncating it would contradict that VDL.
                raise Truncated(f"pg {pg}: truncation from {start} is below the durable floor {seg.meta.floor}")
        segs.append(seg)
    results = {}
    futures = []
    for seg in segs:
        # No await between the in-memory seal and queueing its deletes: a commit in
        # between would persist the new meta while the dropped records are still stored.
        result = seg.log.seal(epoch, truncations)
        deletes = drop_keys(state.store, seg.pg, result.dropped)
        seg.note_dropped(result.dropped)
        futures.append(state.committer.submit([seg], deletes=deletes))
        results[seg] = result
        log.info("segment_sealed", pg=seg.pg, epoch=epoch, dropped=len(result.dropped),
                 scl_before=result.scl_before, scl_after=result.scl_after)
    await asyncio.gather(*futures)
    return web.json_response({"results": {str(s.pg): {"scl": s.durable_scl} for s in results}})


# -- records and pages ---------------------------------------------------------------------
async def get_records(request: web.Request) -> web.Response:
    state = request.app[STATE]
    seg = segment_of(state, request)
    after = int_param(request, "after", 0)
    upto = int_param(request, "upto", keys.MAX_U64)
    limit = min(int_param(request, "limit", 10_000), 100_000)
    if after < seg.log_gc_lsn:
        return error(410, "below_horizon", f"records <= {seg.log_gc_lsn} were garbage-collected",
                     log_gc_lsn=seg.log_gc_lsn)
    body, corrupt = await asyncio.get_running_loop().run_in_executor(
        state.reader, reads.read_records, state.store, seg.pg, after, upto, limit
    )
    headers = {"X-Tidemark-SCL": str(seg.durable_scl)}
    if corrupt is not None:
        state.telemetry.corrupt.add(1)
        log.error("corrupt_record", pg=seg.pg, lsn=corrupt, during="records")
        state.scrubber.request()
        if not body:
            return error(500, CorruptRecord.code, f"stored record pg={seg.pg} lsn={corrupt} fails its CRC",
                         lsn=corrupt)
        headers["X-Tidemark-Corrupt-LSN"] = str(corrupt)
    return web.Response(body=body, content_type="application/octet-stream", headers=headers)


async def get_page(request: web.Request) -> web.Response:
    state = request.app[STATE]
    seg = segment_of(state, request)
    try:
        page = int(request.match_info["page"])
    except ValueError as exc:
        raise MalformedFrame("page must be an integer") from exc
    at = int_param(request, "at")
    tail = int_param(request, "tail", at)
    epoch = request.query.get("epoch")
    if epoch is not None:
        e = int_param(request, "epoch")
        if e < seg.meta.volume_epoch:
            raise StaleEpoch(f"pg {seg.pg}: read epoch {e} < {seg.meta.volume_epoch}")
        if e > seg.meta.volume_epoch:
            raise NeedsSeal(f"pg {seg.pg}: read epoch {e} > {seg.meta.volume_epoch}")
    try:
        if seg.layout.pg_of(page) != seg.pg:
            raise MalformedFrame(f"page {page} is not in pg {seg.pg}")
    except ValueError as exc:
        raise MalformedFrame(str(exc)) from exc
    if tail > at:
        raise MalformedFrame(f"tail {tail} above read point {at}")
    if seg.durable_scl < tail:
        return error(409, "not_complete", f"pg {seg.pg}: SCL {seg.durable_scl} < tail {tail}",
                     scl=seg.durable_scl)
    if at < seg.gc_lsn:
        return error(410, "below_horizon", f"pg {seg.pg}: read point {at} < GC horizon {seg.gc_lsn}",
                     gc_lsn=seg.gc_lsn)
    upto = min(at, seg.durable_scl)
    try:
        image = await asyncio.get_running_loop().run_in_executor(
            state.reader, reads.read_page, state.store, seg.pg, page, upto, seg.layout.page_size
        )
    except CorruptRecord as exc:
        state.telemetry.corrupt.add(1)
        log.error("corrupt_record", pg=seg.pg, page=page, during="page_read", error=str(exc))
        state.scrubber.request()  # repair soon; this read is refused, never served bad bytes
        raise
    state.telemetry.page_reads.add(1)
    return web.Response(body=image, content_type="application/octet-stream",
                        headers={"X-Tidemark-SCL": str(seg.durable_scl)})


# -- lifecycle -------------------------------------------------------------------------------
def open_state(settings: Settings) -> NodeState:
    store = Store(os.path.join(settings.data, "rocksdb"))
    telemetry = Telemetry(settings.name, settings.zone, trace_console=settings.trace_console)
    state = NodeState(settings, store, telemetry, Committer(store, telemetry), Scrubber(telemetry))
    state_gauges.register(state)
    return state


def load(state: NodeState) -> None:
    """Blocking: bump the generation, load the peer directory and every segment."""
    store = state.store
    raw = store.get(keys.node_key("generation"))
    state.generation = (int(raw) if raw else 0) + 1
    batch = store.batch()
    batch.put(keys.node_key("generation"), str(state.generation).encode())
    store.write(batch)
    peers = store.get(state.peers_key())
    if peers:
        state.peers = json.loads(peers)
    for _key, value in store.scan(b"M", b"N"):
        seg = load_segment(store, value)
        state.segments[seg.pg] = seg


async def on_startup(app: web.Application) -> None:
    # Load in the background so /livez answers (and /readyz says 503) while a node with
    # much data rebuilds its segments; everything else is refused until ready.
    app[TASKS] = [asyncio.get_running_loop().create_task(start(app[STATE], app), name="start")]


async def start(state: NodeState, app: web.Application) -> None:
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(None, load, state)
    except Exception as exc:  # stay alive and not ready: /readyz and the log say why
        state.load_error = repr(exc)
        log.critical("load_failed", error=repr(exc), exc_info=True)
        return
    state.committer.start()
    app[TASKS] += [
        loop.create_task(gossip_loop(state), name="gossip"),
        loop.create_task(materialize_loop(state), name="materialize"),
        loop.create_task(gc_loop(state), name="gc"),
    ]
    app[TASKS].append(loop.create_task(scrub_loop(state), name="scrub"))
    if state.settings.server_tls is not None:  # certificate rotation without a restart
        app[TASKS].append(loop.create_task(state.settings.server_tls.reload_loop(), name="tls-reload"))
    if state.settings.backup:  # continuous backup (uploader.py)
        app[TASKS].append(start_uploader(state))
    state.ready = True
    log.info("node_started", node=state.name, zone=state.settings.zone, generation=state.generation,
             segments=len(state.segments), pid=os.getpid())


async def on_shutdown(app: web.Application) -> None:
    state = app[STATE]
    state.ready = False
    for ws in list(state.sockets):  # writers reconnect elsewhere; don't wait for them
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")
    for task in app[TASKS]:
        task.cancel()
    await asyncio.gather(*app[TASKS], return_exceptions=True)


async def on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    await state.committer.close()
    state.reader.shutdown(wait=True)
    state.store.close()
    state.telemetry.shutdown()
    log.info("node_stopped", node=state.name)


def make_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[authorize, protocol_errors], client_max_size=8 << 20)
    state = open_state(settings)
    app[STATE] = state
    app[TASKS] = []
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/status", status)
    app.router.add_get("/metrics", metrics)
    app.router.add_put("/v1/segments/{pg}", put_segment)
    app.router.add_delete("/v1/segments/{pg}", delete_segment)
    app.router.add_put("/v1/peers", put_peers)
    app.router.add_get("/v1/log", log_stream)
    app.router.add_get("/v1/segments/{pg}/report", report)
    app.router.add_post("/v1/seal", seal)
    app.router.add_get("/v1/segments/{pg}/records", get_records)
    app.router.add_get("/v1/segments/{pg}/pages/{page}", get_page)
    app.router.add_get("/v1/segments/{pg}/snapshot", get_snapshot)
    app.router.add_post("/v1/segments/{pg}/hydrate", post_hydrate)
    app.router.add_post("/v1/segments/{pg}/install", post_install)
    if settings.fault_injection:  # `--enable-fault-injection` only (faults.py)
        add_fault_routes(app)
    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    app.on_cleanup.append(on_cleanup)
    return app

