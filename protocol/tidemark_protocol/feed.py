"""The replica feed: what a writer instance tells its read replicas, and what they answer.

One text message per WebSocket frame, JSON (the one home of this format):

    writer → replica  {"t": "vdl", "epoch": E, "vdl": V, "prev": P, "tails": {pg: lsn},
                       "pages": [volume pages changed in (P, V]], "at_us": unix µs}
    replica → writer  {"t": "read_point", "lsn": R}

`prev` chains updates: a replica whose last VDL is not `prev` missed some (it joined
late or the stream dropped) and must forget every cached page. The first update on a
connection has `prev` = -1 for that reason. `tails` are each PG's last LSN ≤ VDL: what a
segment must hold to serve a read at that point. `at_us` is when VDL reached V on the
writer (the replica's lag is measured from it).

Off loopback (a replica pod reaching its writer pod) a replica presents
`Authorization: Bearer <feed_token(secret)>`, the secret being the instances' shared
credentials: the feed carries which pages changed, and its read points hold back GC.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from .errors import MalformedFrame

UNCHAINED = -1
AUTH_SCHEME = "Bearer"


def feed_token(secret: str) -> str:
    """The bearer token of the feed, derived from the instances' shared secret (never sent)."""
    return hashlib.sha256(b"tidemark-replica-feed\0" + secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class VdlUpdate:
    epoch: int
    vdl: int
    prev: int  # the VDL of the previous update on this connection; UNCHAINED: none
    tails: dict[int, int]
    pages: list[int] = field(default_factory=list)
    at_us: int = 0


def encode_update(update: VdlUpdate) -> str:
    return json.dumps({"t": "vdl", "epoch": update.epoch, "vdl": update.vdl, "prev": update.prev,
                       "tails": {str(pg): lsn for pg, lsn in update.tails.items()},
                       "pages": update.pages, "at_us": update.at_us}, separators=(",", ":"))


def encode_read_point(lsn: int) -> str:
    return json.dumps({"t": "read_point", "lsn": lsn})


def decode(text: str) -> VdlUpdate | int:
    """A VdlUpdate, or the read point (int) a replica reported."""
    try:
        data = json.loads(text)
        if data["t"] == "read_point":
            return int(data["lsn"])
        if data["t"] == "vdl":
            return VdlUpdate(int(data["epoch"]), int(data["vdl"]), int(data["prev"]),
                             {int(pg): int(lsn) for pg, lsn in data["tails"].items()},
                             [int(p) for p in data["pages"]], int(data["at_us"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise MalformedFrame(f"bad feed message: {exc}") from exc
    raise MalformedFrame(f"unknown feed message type {data.get('t')!r}")
