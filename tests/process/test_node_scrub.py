"""The scrubber: corrupt stored records and page versions (through the debug endpoints
on a running node, and in RocksDB while the node is down) are detected, repaired from
peers or the local log, and never served meanwhile."""

from __future__ import annotations

import asyncio
import random
import struct

import pytest

from tidemark_protocol.frames import decode_records
from tidemark_protocol.pages import page_at, patch_payload
from tidemark_protocol.records import HEADER_SIZE

pytestmark = [pytest.mark.process, pytest.mark.rebuild, pytest.mark.timeout(120)]

PAGE_SIZE = 256
LAYOUT = {"pg_count": 4, "pages_per_pg": 16, "page_size": PAGE_SIZE}
ARGS = ["--gossip-interval", "5", "--materialize-interval", "0.05", "--materialize-chunk", "400",
        "--materialize-min-batch", "100", "--gc-interval", "0.2", "--gc-log-tail", "0",
        "--scrub-interval", "0.5"]
FAULTS = ["--enable-fault-injection"]  # the fake disk corruption endpoints
MEMBERS = ["a", "b", "c", "d", "e", "f"]


def make_records(wire, count: int, rng: random.Random):
    chain = wire.LogChain(0)
    out = []
    for lsn in range(1, count + 1):
        page = rng.randrange(8)
        if rng.random() < 0.05:
            out.append(chain.record(lsn, page, rng.randbytes(rng.randrange(1, PAGE_SIZE)), full=True))
        else:
            data = rng.randbytes(rng.randrange(1, 24))
            out.append(chain.record(lsn, page, patch_payload(rng.randrange(PAGE_SIZE - len(data)), data)))
    return out


def reference(records, page: int, at: int) -> bytes:
    return page_at(records, page, at, PAGE_SIZE)


async def check_reads(c, records, points, allow_errors: bool) -> int:
    """Every read is either the right page or a clear corrupt_record error; never wrong bytes."""
    errors = 0
    for at in points:
        for page in range(8):
            status, body, _ = await c.request("GET", f"/v1/segments/0/pages/{page}",
                                              params={"at": str(at), "tail": str(at)})
            if status == 500:
                assert allow_errors and b"corrupt_record" in body, body
                errors += 1
            else:
                assert status == 200, (status, body)
                assert body == reference(records, page, at), f"bad data served: page {page} at {at}"
    return errors


async def wait_horizons_settled(c, quiet: float = 1.0, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last, since = None, loop.time()
    while loop.time() < deadline:
        seg = await c.segment(0)
        now = (seg["gc_lsn"], seg["log_gc_lsn"])
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since >= quiet:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"GC horizons still moving after {timeout}s: {last}")


async def setup(node_factory, node_client, wire):
    nodes = [node_factory(n, z, extra_args=ARGS + FAULTS) for n, z in (("a", "z1"), ("b", "z2"), ("c", "z3"))]
    clients = [node_client(n) for n in nodes]
    peers = {n.name: n.url for n in nodes}
    for c in clients:
        await c.put_segment(0, MEMBERS, peers, layout=LAYOUT)
    records = make_records(wire, 1500, random.Random(13))
    streams = [await c.open_log() for c in clients]
    for i in range(0, 1500, 100):
        vdl = min(1200, i + 100)
        acks = await asyncio.gather(*(s.call(wire.frame(i + 1, [(0, 1, records[i : i + 100])], vdl=vdl,
                                                        pgmrpl=min(1000, vdl))) for s in streams))
        assert all(a["results"]["0"]["scl"] == i + 100 for a in acks)
    for c in clients:
        await c.wait_segment(0, lambda s: s["materialized_lsn"] == 1200 and s["log_gc_lsn"] > 0,
                             what="materialized, log partly GC'd")
    for s in streams:
        await s.close()
    # GC steps up materialization boundaries a few GC intervals after materializing: wait
    # until the horizons stop moving, so that GC never deletes a record we corrupt below
    # (which would leave it neither repaired nor served) and the horizons read are final.
    for c in clients:
        await wait_horizons_settled(c)
    # Peers GC at their own boundaries: corrupt only what some peer can still serve
    # (above every node's horizons), else the copy is unrepairable by design.
    segs = [await c.segment(0) for c in clients]
    horizons = {"gc": max(s["gc_lsn"] for s in segs), "log_gc": max(s["log_gc_lsn"] for s in segs)}
    return nodes, clients, records, horizons


async def test_scrub_repairs_online_corruption(node_factory, node_client, wire):
    nodes, clients, records, hz = await setup(node_factory, node_client, wire)
    a = clients[0]
    seg = await a.segment(0)
    rng = random.Random(4)
    log_lsns = sorted(rng.sample(range(hz["log_gc"] + 1, 1501), 6))
    for lsn in log_lsns:
        await a.json("POST", f"/v1/debug/segments/0/fake-disk-corruption?lsn={lsn}")
    vers = []
    for page in rng.sample(range(8), 5):
        got = await a.json("POST", f"/v1/debug/segments/0/fake-page-corruption?page={page}&lsn=1200"
                                   f"&offset={rng.randrange(PAGE_SIZE + 4)}")
        assert got["lsn"] >= hz["gc"]
        vers.append((page, got["lsn"]))
    # Right away (before or during repair): nothing wrong is ever served.
    await check_reads(a, records, [seg["gc_lsn"], 1200, 1300, 1500], allow_errors=True)
    total = len(log_lsns) + len(set(vers))
    st = await a.wait_segment(0, lambda s: s["corruptions_repaired"] >= total, what="all repaired")
    assert st["corruptions_detected"] == st["corruptions_repaired"] == total
    node_status = await a.status()
    assert node_status["corruptions_detected"] == node_status["corruptions_repaired"] == total
    assert node_status["scrub_unrepaired"] == 0
    gc_now = (await a.segment(0))["gc_lsn"]
    assert await check_reads(a, records, [gc_now, 1200, 1300, 1500], allow_errors=False) == 0
    # Log GC keeps advancing in the background: read above the horizon as it is now (a
    # stale horizon answers 410 with a JSON body, which once read as a corrupt record).
    horizon = (await a.segment(0))["log_gc_lsn"]
    status, body, headers = await a.request("GET", "/v1/segments/0/records", params={"after": str(horizon)})
    assert status == 200, (status, body[:200])
    assert "X-Tidemark-Corrupt-LSN" not in headers
    assert decode_records(body) == records[horizon:]
    assert horizon < max(log_lsns), "log GC passed every corrupted record: the check above proves nothing"
    metrics = (await a.request("GET", "/metrics"))[1].decode()
    assert "tidemark_corruptions_repaired" in metrics and "tidemark_corruptions_detected" in metrics
    # A later pass finds nothing new.
    passes = node_status["scrub_passes"]
    await asyncio.sleep(1.2)
    st2 = await a.status()
    assert st2["scrub_passes"] > passes and st2["corruptions_detected"] == total


async def test_scrub_repairs_offline_corruption(node_factory, node_client, wire):
    from rocksdict import Options, Rdict

    nodes, clients, records, hz = await setup(node_factory, node_client, wire)
    b, cb = nodes[1], clients[1]
    assert b.stop() == 0
    rng = random.Random(8)
    db = Rdict(str(b.data / "rocksdb"), Options(raw_mode=True))
    try:
        bad_records = sorted(rng.sample(range(hz["log_gc"] + 1, 1501), 5))
        for lsn in bad_records:  # payload/CRC bytes (the header is what a restart rebuilds the chain from)
            key = b"L" + struct.pack(">IQ", 0, lsn)
            raw = bytearray(db[key])
            raw[rng.randrange(HEADER_SIZE, len(raw))] ^= 1 << rng.randrange(8)
            db[key] = bytes(raw)
        vkeys = [k for k in db.keys(from_key=b"V" + struct.pack(">I", 0))
                 if k[:5] == b"V" + struct.pack(">I", 0) and struct.unpack_from(">Q", k, 13)[0] >= hz["gc"]]
        bad_versions = rng.sample(vkeys, 4)
        for key in bad_versions:
            val = bytearray(db[key])
            val[rng.randrange(len(val))] ^= 0x40
            db[key] = bytes(val)
    finally:
        db.close()
    b.start().wait_ready()
    total = len(bad_records) + len(bad_versions)
    st = await cb.wait_segment(0, lambda s: s["corruptions_repaired"] >= total, what="all repaired")
    assert st["corruptions_detected"] == st["corruptions_repaired"] == total
    gc_now = (await cb.segment(0))["gc_lsn"]
    assert await check_reads(cb, records, [gc_now, 1200, 1500], allow_errors=False) == 0
    horizon = (await cb.segment(0))["log_gc_lsn"]  # GC may have moved on since `seg`
    status, body, _ = await cb.request("GET", "/v1/segments/0/records", params={"after": str(horizon)})
    assert status == 200, (status, body[:200])
    assert decode_records(body) == records[horizon:]
