"""A page read from one segment, hedged to the next after a slow answer.

Shared by the writer and the read-only replica client: candidates are tried in order
(complete segments first); each next one starts when the previous has not answered
within `hedge_after` or failed, and the first good answer wins.
"""

from __future__ import annotations

import asyncio

import aiohttp

from . import node_client


class ReadFailed(Exception):
    pass


async def hedged_read(
    session: aiohttp.ClientSession,
    urls: dict[str, str],
    candidates: list[str],
    pg: int,
    page: int,
    at: int,
    tail: int,
    epoch: int | None,
    hedge_after: float,
) -> bytes:
    errors: list[str] = []
    pending: set[asyncio.Task[bytes]] = set()
    try:
        for node in candidates:
            task = asyncio.create_task(node_client.read_page(session, urls[node], pg, page, at, tail, epoch))
            task.node = node  # type: ignore[attr-defined]
            pending.add(task)
            done, pending = await asyncio.wait(pending, timeout=hedge_after, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                if finished.exception() is None:
                    return finished.result()
                errors.append(f"{finished.node}: {finished.exception()}")  # type: ignore[attr-defined]
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for finished in done:
                if finished.exception() is None:
                    return finished.result()
                errors.append(f"{finished.node}: {finished.exception()}")  # type: ignore[attr-defined]
    finally:
        for task in pending:
            task.cancel()
    raise ReadFailed(f"page {page} at {at}: no segment could serve it: {errors}")
