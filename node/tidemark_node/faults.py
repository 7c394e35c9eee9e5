"""Fault injection: fake disk corruption, served only by a node started with
`tidemark node run --enable-fault-injection` (the tests and `tidemark chaos corrupt`;
the operator never passes it and the chart cannot). Never read from the environment.

    POST /v1/debug/segments/{pg}/fake-disk-corruption?lsn=L
    POST /v1/debug/segments/{pg}/fake-page-corruption?page=P&lsn=L&offset=O

Each flips one byte of a stored value in place, as a failing disk would. These are the
only writes that bypass the commit queue (commit.py): a disk does not queue its
damage, and the segment's meta must not change with it.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from tidemark_protocol import keys

from .httputil import error, int_param, segment_of
from .state import STATE, NodeState


async def _write_bypassing_commit_queue(state: NodeState, key: bytes, value: bytes) -> None:
    """Fault injection only: overwrite one stored value outside the group commit."""
    batch = state.store.batch()
    batch.put(key, value)
    await asyncio.get_running_loop().run_in_executor(None, state.store.write, batch)


def _flip(value: bytes, pos: int) -> bytes:
    return value[:pos] + bytes([value[pos] ^ 0xFF]) + value[pos + 1 :]


async def fake_disk_corruption(request: web.Request) -> web.Response:
    """Flip a byte of a stored record's payload (the last one; a header byte for an
    empty payload), without touching anything else."""
    state = request.app[STATE]
    seg = segment_of(state, request)
    lsn = int_param(request, "lsn")
    key = keys.log_key(seg.pg, lsn)
    raw = state.store.get(key)
    if raw is None:
        return error(404, "not_found", f"no record lsn={lsn}")
    await _write_bypassing_commit_queue(state, key, _flip(raw, len(raw) - 5))
    return web.json_response({"pg": seg.pg, "lsn": lsn, "corrupted": True})


async def fake_page_corruption(request: web.Request) -> web.Response:
    """Flip a byte of page version (page, lsn) (`offset` into the stored value, default
    the last byte); with only `page`, the page's newest version."""
    state = request.app[STATE]
    seg = segment_of(state, request)
    page = int_param(request, "page")
    lsn = int_param(request, "lsn", keys.MAX_U64)
    found = state.store.last_at_or_below(keys.version_key(seg.pg, page, lsn),
                                         keys.page_prefix(b"V", seg.pg, page))
    if found is None:
        return error(404, "not_found", f"no version of page {page} at or below {lsn}")
    key, value = found
    pos = int_param(request, "offset", len(value) - 1) % len(value)
    await _write_bypassing_commit_queue(state, key, _flip(value, pos))
    return web.json_response({"pg": seg.pg, "page": page, "lsn": keys.page_lsn(key)[1], "corrupted": True})


def add_fault_routes(app: web.Application) -> None:
    app.router.add_post("/v1/debug/segments/{pg}/fake-disk-corruption", fake_disk_corruption)
    app.router.add_post("/v1/debug/segments/{pg}/fake-page-corruption", fake_page_corruption)
