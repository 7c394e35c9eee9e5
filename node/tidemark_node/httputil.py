"""Helpers every HTTP handler of the node shares: JSON errors, request parsing, and the
segment a `/v1/segments/{pg}/...` route names."""

from __future__ import annotations

import json

from aiohttp import web

from tidemark_protocol import keys
from tidemark_protocol.errors import CorruptRecord, MalformedFrame, ProtocolError, UnknownSegment

from .segments import Segment
from .state import NodeState


def error(status: int, code: str, message: str, **extra) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def refuse(exc: ProtocolError) -> web.Response:
    status = {UnknownSegment.code: 404, CorruptRecord.code: 500}.get(exc.code, 409)
    if isinstance(exc, MalformedFrame) and not isinstance(exc, CorruptRecord):
        status = 400
    return error(status, exc.code, str(exc))


async def read_json(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise MalformedFrame(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedFrame("body must be a JSON object")
    return body


def int_param(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise MalformedFrame(f"query parameter {name!r} is required")
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise MalformedFrame(f"query parameter {name!r} must be an integer") from exc
    if not 0 <= value <= keys.MAX_U64:
        raise MalformedFrame(f"query parameter {name!r} must be in [0, 2**64)")
    return value


def segment_of(state: NodeState, request: web.Request) -> Segment:
    try:
        pg = int(request.match_info["pg"])
    except ValueError as exc:
        raise MalformedFrame("pg must be an integer") from exc
    seg = state.segments.get(pg)
    if seg is None:
        raise UnknownSegment(f"pg {pg} is not hosted here")
    return seg
