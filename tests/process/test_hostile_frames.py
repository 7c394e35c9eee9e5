"""Hostile WriteBatch frames to ONE node of a healthy fleet (issue #14): structure-aware
mutations of the frames a writer would send, with every CRC recomputed so they reach
the parser and the protocol, not just the CRC check. Afterwards that node's segments
must not be poisoned (VDL hint, membership epoch, volume epoch), a new writer must open
the volume, and a verifying workload must lose no acknowledged commit.

Before the fix the node adopted any VDL (2^64-1) and membership epoch a frame claimed;
the new writer then failed to open ("recovered records ... did not reach a write quorum").

Without credentials the node refuses the log stream outright (401); the mutations are
sent with the writer's token, as a buggy writer or a stolen token would, so the
protocol's own checks are what stands between them and the volume.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from dataclasses import dataclass, replace
from pathlib import Path

import aiohttp
import pytest

from tidemark_compute.topology import (
    Topology,
    load_topology,
    membership_source,
    record_volume_epoch,
)
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.status import converged, fleet_status
from tidemark_protocol.frames import decode_records, encode_batch_with_encoded_records
from tidemark_protocol.node_auth import Role
from tidemark_protocol.records import Record, RecordFlags, crc32c

pytestmark = [pytest.mark.process, pytest.mark.security, pytest.mark.timeout(300)]

BASE_IP = "127.0.160.10"  # this test's range: 127.0.160.10 .. 127.0.160.30
TARGET = "a1"
FRAMES = 3000
SEND_BUDGET_S = 60.0
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1


@dataclass
class Seed:
    """A frame as a writer would (re)send it, kept as fields so mutations stay structural."""

    volume_epoch: int
    vdl: int
    pgmrpl: int
    groups: list[tuple[int, int, list[Record]]]  # (pg, membership_epoch, records)
    marks: list[tuple[int, int]]


def interesting(rng: random.Random, value: int, bits: int = 64) -> int:
    top = (1 << bits) - 1
    choices = [0, 1, top, top - 1, 1 << (bits - 1), value + 1, max(value - 1, 0), value * 2,
               value + (1 << 20), rng.getrandbits(bits), value ^ (1 << rng.randrange(bits))]
    return min(rng.choice(choices), top)


def mutate_record(rng: random.Random, r: Record) -> Record:
    field = rng.choice(["lsn", "prev_lsn_in_pg", "prev_lsn_of_page", "page", "flags", "payload", "pg"])
    if field == "flags":
        return replace(r, flags=RecordFlags(rng.choice([0, 1, 2, 3])))
    if field == "payload":
        data = bytearray(r.payload or b"\0")
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return replace(r, payload=bytes(data))
    bits = 32 if field == "pg" else 64
    return replace(r, **{field: interesting(rng, getattr(r, field), bits)})


def mutate(rng: random.Random, seed: Seed) -> Seed:
    """One or two structural mutations of a seed (fields, groups, records, marks)."""
    s = replace(seed, groups=[(pg, me, list(rs)) for pg, me, rs in seed.groups], marks=list(seed.marks))
    for _ in range(1 if rng.random() < 0.8 else 2):
        op = rng.choice(["vdl", "vdl", "epoch", "pgmrpl", "mepoch", "mepoch", "pg", "record",
                         "record", "drop", "dup", "marks"])
        if op == "vdl":
            s.vdl = interesting(rng, s.vdl)
        elif op == "epoch":
            s.volume_epoch = interesting(rng, s.volume_epoch)
        elif op == "pgmrpl":
            s.pgmrpl = interesting(rng, s.pgmrpl)
        elif op == "marks":
            s.marks = [(interesting(rng, v), t) for v, t in s.marks] or [(interesting(rng, s.vdl), 0)]
        elif s.groups:
            i = rng.randrange(len(s.groups))
            pg, me, rs = s.groups[i]
            if op == "mepoch":
                me = interesting(rng, me)
            elif op == "pg":
                pg = interesting(rng, pg, 32)
                rs = [replace(r, pg=pg) for r in rs]
            elif op == "record" and rs:
                j = rng.randrange(len(rs))
                rs[j] = mutate_record(rng, rs[j])
            elif op == "drop" and rs:
                del rs[rng.randrange(len(rs))]
            elif op == "dup" and rs:
                rs.append(rs[rng.randrange(len(rs))])
            s.groups[i] = (pg, me, rs)
    return s


def encode(rng: random.Random, seq: int, s: Seed) -> bytes:
    groups = [(pg, me, [r.encode() for r in rs]) for pg, me, rs in s.groups]
    frame = encode_batch_with_encoded_records(seq, s.volume_epoch, s.vdl, s.pgmrpl, groups, s.marks)
    if rng.random() < 0.1:  # a group header's count or the group count off by one, CRC fixed
        body = bytearray(frame[:-4])
        off = 4 + 8 * 4
        struct.pack_into("<I", body, off, max(struct.unpack_from("<I", body, off)[0] + rng.choice([-1, 1]), 0))
        frame = bytes(body) + struct.pack("<I", crc32c(bytes(body)))
    return frame


async def node_json(session: aiohttp.ClientSession, url: str, path: str) -> dict:
    async with session.get(url + path) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()


async def segments_of(session: aiohttp.ClientSession, url: str) -> dict[int, dict]:
    return {s["pg"]: s for s in (await node_json(session, url, "/v1/status"))["segments"]}


async def build_seeds(session: aiohttp.ClientSession, url: str, vdl: int) -> list[Seed]:
    """Frames like a writer's resend: the node's own stored records, its epochs, the VDL."""
    segs = await segments_of(session, url)
    seeds = []
    for pg, seg in sorted(segs.items()):
        async with session.get(f"{url}/v1/segments/{pg}/records", params={"after": "0", "limit": "400"}) as resp:
            records = decode_records(await resp.read())
        for i in range(0, len(records), 40):
            chunk = records[i : i + 40]
            seeds.append(Seed(seg["volume_epoch"], vdl, vdl, [(pg, seg["membership_epoch"], chunk)],
                              [(vdl, time.time_ns() // 1000)]))
        seeds.append(Seed(seg["volume_epoch"], vdl, vdl, [(pg, seg["membership_epoch"], [])], []))
    assert seeds, "the workload left no records on the target node"
    return seeds


async def send_hostile(url: str, seeds: list[Seed], frames: int, rng: random.Random,
                       topology: Topology) -> dict[str, int]:
    """Pipelined hostile frames on one WebSocket, bounded in count and time; returns how
    the node answered (accepted groups, refusal codes)."""
    outcome: dict[str, int] = {}
    deadline = time.monotonic() + SEND_BUDGET_S
    async with topology.session(Role.WRITER) as session, session.ws_connect(f"{url}/v1/log", max_msg_size=0) as ws:
        window = 64
        sent = acked = 0
        while acked < sent or (sent < frames and time.monotonic() < deadline):
            while sent < frames and sent - acked < window and time.monotonic() < deadline:
                sent += 1
                await ws.send_bytes(encode(rng, sent, mutate(rng, rng.choice(seeds))))
            msg = await asyncio.wait_for(ws.receive(), 20)
            assert msg.type == aiohttp.WSMsgType.TEXT, msg
            acked += 1
            ack = msg.json()
            if ack.get("error"):
                outcome[ack["error"]] = outcome.get(ack["error"], 0) + 1
            for res in (ack.get("results") or {}).values():
                key = res.get("error", "accepted")
                outcome[key] = outcome.get(key, 0) + 1
    outcome["frames"] = sent
    return outcome


async def open_writer(fl: fleet_mod.Fleet) -> Writer:
    topology = load_topology(fl.dir)
    writer = await Writer.open(topology, timeout=30, membership_source=membership_source(fl.dir))
    record_volume_epoch(fl.dir, topology.volume_epoch)
    return writer


@pytest.fixture
async def fleet(tmp_path: Path):
    fl, _topology = await fleet_mod.up(tmp_path / "pg", 2, 3, 32, 4096, BASE_IP, gossip_interval=0.3)
    try:
        yield fl
    finally:
        fl.down()
        log = fl.log_file(TARGET)
        if log.exists():
            print(f"--- {TARGET} log tail ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))


async def test_hostile_frames_to_one_node_do_not_brick_the_volume(fleet):
    model = Model()
    writer = await open_writer(fleet)
    try:
        stats = await run_workload(writer, model, 1.5, concurrency=8)
        assert stats.acked > 0
        vdl = writer.vdl
    finally:
        await writer.close()

    url = fleet.nodes[TARGET].url
    topology = load_topology(fleet.dir)
    async with topology.session(Role.ADMIN) as session:
        before = await segments_of(session, url)
        seeds = await build_seeds(session, url, vdl)
    async with topology.session(None) as session:
        for headers in ({}, topology.headers(Role.READER), {"Authorization": "Bearer writer.00"}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{url}/v1/log", headers=headers)
            assert refused.value.status in (401, 403), refused.value
    outcome = await send_hostile(url, seeds, FRAMES, random.Random(14), topology)
    print("hostile frames:", outcome)
    assert outcome["frames"] >= 1000, outcome

    # The target's segments are not poisoned: no hint beyond what its PG's segments
    # hold, no epoch a frame raised.
    async with topology.session(Role.ADMIN) as session:
        after = await segments_of(session, url)
        peers = {name: await segments_of(session, u) for name, u in topology.nodes.items() if name != TARGET}
    for pg, seg in after.items():
        held = max(p[pg]["max_lsn"] for p in peers.values() if pg in p)
        assert seg["vdl_hint"] <= max(held, before[pg]["vdl_hint"]), (pg, seg, held)
        assert seg["membership_epoch"] == before[pg]["membership_epoch"], (pg, seg)
        assert seg["volume_epoch"] == before[pg]["volume_epoch"], (pg, seg)

    # A new writer opens the volume, nothing acknowledged is lost, and it writes on.
    writer = await open_writer(fleet)
    try:
        result = await verify(writer, model, timeout=30)
        assert result.ok and result.acked >= stats.acked, result.to_json()
        more = await run_workload(writer, model, 1.0, concurrency=8)
        assert more.acked > 0 and more.failed == 0
        result = await verify(writer, model, timeout=30)
        assert result.ok, result.to_json()
        await wait_converged(fleet)  # the target takes the real writer's frames again
    finally:
        await writer.close()


async def wait_converged(fl: fleet_mod.Fleet, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        status = await fleet_status(fl, load_topology(fl.dir))
        if converged(status):
            return
        assert time.monotonic() < deadline, f"fleet did not converge: {status['pgs']}"
        await asyncio.sleep(0.3)
