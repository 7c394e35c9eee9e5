"""Plain HTTP calls a writer makes to a node outside the log stream."""

from __future__ import annotations

import aiohttp

from tidemark_protocol.errors import ProtocolError
from tidemark_protocol.frames import decode_records
from tidemark_protocol.records import Record
from tidemark_protocol.recovery import RecordInfo, SegmentReport


class NodeRequestError(ProtocolError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message} (HTTP {status})")
        self.status = status
        self.code = code


async def _raise_for(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    try:
        body = await resp.json(content_type=None)
        code, message = body.get("error", "error"), body.get("message", "")
    except Exception:  # not JSON: report the text
        code, message = "error", await resp.text()
    raise NodeRequestError(resp.status, code, message)


async def fetch_report(session: aiohttp.ClientSession, url: str, pg: int) -> SegmentReport:
    async with session.get(f"{url}/v1/segments/{pg}/report") as resp:
        await _raise_for(resp)
        data = await resp.json()
    return SegmentReport(
        segment=data["segment"],
        volume_epoch=int(data["volume_epoch"]),
        scl=int(data["scl"]),
        floor=int(data["floor"]),
        vdl_hint=int(data["vdl_hint"]),
        truncations=[(int(a), int(b)) for a, b in data["truncations"]],
        records=[RecordInfo(int(a), int(b), int(c)) for a, b, c in data["records"]],
    )


async def seal(
    session: aiohttp.ClientSession,
    url: str,
    volume_epoch: int,
    truncations: list[tuple[int, int]],
    pgs: list[int],
) -> dict[int, int]:
    body = {"volume_epoch": volume_epoch, "truncations": [list(t) for t in truncations], "pgs": pgs}
    async with session.post(f"{url}/v1/seal", json=body) as resp:
        await _raise_for(resp)
        data = await resp.json()
    return {int(pg): int(r["scl"]) for pg, r in data["results"].items() if "scl" in r}


async def fetch_records(
    session: aiohttp.ClientSession, url: str, pg: int, after: int, upto: int | None = None
) -> list[Record]:
    params = {"after": str(after), "limit": "100000"}
    if upto is not None:
        params["upto"] = str(upto)
    async with session.get(f"{url}/v1/segments/{pg}/records", params=params) as resp:
        await _raise_for(resp)
        return decode_records(await resp.read())


async def read_page(
    session: aiohttp.ClientSession, url: str, pg: int, page: int, at: int, tail: int, epoch: int | None
) -> bytes:
    """A page at read point `at`; `epoch` None: any volume epoch (a replica's read at a
    durable point stays right across a new writer's seal)."""
    params = {"at": str(at), "tail": str(tail)}
    if epoch is not None:
        params["epoch"] = str(epoch)
    async with session.get(f"{url}/v1/segments/{pg}/pages/{page}", params=params) as resp:
        await _raise_for(resp)
        return await resp.read()
