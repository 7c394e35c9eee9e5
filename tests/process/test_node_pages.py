"""Materialization, page reads at a read point, GC horizons and on-disk corruption."""

from __future__ import annotations

import random

import pytest

from tidemark_protocol.frames import decode_records
from tidemark_protocol.pages import page_at, patch_payload

pytestmark = [pytest.mark.process, pytest.mark.timeout(150)]

PAGE_SIZE = 256
LAYOUT = {"pg_count": 4, "pages_per_pg": 16, "page_size": PAGE_SIZE}
ARGS = ["--gossip-interval", "5", "--materialize-interval", "0.1", "--materialize-chunk", "400",
        "--gc-interval", "0.3", "--gc-log-tail", "0"]
FAULTS = ["--enable-fault-injection"]  # the fake disk corruption endpoints


def make_records(wire, pg: int, start: int, count: int, rng: random.Random, chain=None):
    chain = chain or wire.LogChain(pg)
    base = pg * LAYOUT["pages_per_pg"]
    out = []
    for lsn in range(start, start + count):
        page = base + rng.randrange(8)
        if rng.random() < 0.05:
            out.append(chain.record(lsn, page, rng.randbytes(rng.randrange(1, PAGE_SIZE)), full=True))
        else:
            data = rng.randbytes(rng.randrange(1, 24))
            out.append(chain.record(lsn, page, patch_payload(rng.randrange(PAGE_SIZE - len(data)), data)))
    return chain, out


def reference(records, page: int, at: int) -> bytes:
    return page_at(records, page, at, PAGE_SIZE)


async def read(c, pg: int, page: int, at: int, tail: int | None = None, epoch: int = 1):
    params = {"at": str(at), "tail": str(at if tail is None else tail), "epoch": str(epoch)}
    return await c.request("GET", f"/v1/segments/{pg}/pages/{page}", params=params)


async def assert_pages(c, records, points) -> None:
    for at in points:
        for page in sorted({r.page for r in records}):
            status, body, _ = await read(c, 0, page, at)
            assert status == 200, (at, page, body)
            assert body == reference(records, page, at), f"page {page} at {at}"


async def test_materialize_read_gc_restart(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=ARGS)
    c = node_client(node)
    await c.put_segment(0, ["n1"], layout=LAYOUT)
    rng = random.Random(7)
    chain, records = make_records(wire, 0, 1, 1500, rng)
    log = await c.open_log()
    for i in range(0, 1500, 100):
        ack = await log.call(wire.frame(i + 1, [(0, 1, records[i : i + 100])], vdl=1200))
    assert ack["results"]["0"]["scl"] == 1500

    seg = await c.wait_segment(0, lambda s: s["materialized_lsn"] == 1200 and s["backlog"] == 0,
                               what="materialized to the VDL hint")
    assert seg["vdl_hint"] == 1200
    # Below, at and above the materialized point (version + redo of the page's records).
    await assert_pages(c, records, [1, 137, 1200, 1333, 1500])

    # Read point beyond what the segment holds: not complete; wrong epochs refused.
    status, body, _ = await read(c, 0, 0, 1600, tail=1501)
    assert status == 409 and b"not_complete" in body
    status, body, _ = await read(c, 0, 0, 1500, epoch=2)
    assert status == 409 and b"needs_seal" in body
    status, body, _ = await read(c, 0, 0, 1500, epoch=0)
    assert status == 409 and b"stale_epoch" in body
    status, body, _ = await read(c, 0, 16, 1500)  # page of pg 1
    assert status == 400 and b"malformed" in body

    # VDL 1500 and PGMRPL 1300: versions below the 1200 boundary go, and the log up to
    # the floor: the hint rose with the SCL (a VDL is adopted up to the SCL only), so the
    # amortized chain trim (more than 1024 entries) happened when it reached 1100.
    ack = await log.call(wire.frame(99, [(0, 1, [])], vdl=1500, pgmrpl=1300))
    seg = await c.wait_segment(0, lambda s: s["materialized_lsn"] == 1500 and s["log_gc_lsn"] == 1100,
                               what="GC to the horizon")
    assert seg["gc_lsn"] == 1200 and seg["records"] == 400
    status, body, _ = await read(c, 0, 0, 1100)
    assert status == 410 and b"below_horizon" in body
    status, body, _ = await c.request("GET", "/v1/segments/0/records", params={"after": "100"})
    assert status == 410 and b"below_horizon" in body
    await assert_pages(c, records, [1200, 1250, 1500])
    _, body, _ = await c.request("GET", "/v1/segments/0/records", params={"after": "1200"})
    assert decode_records(body) == records[1200:]
    await log.close()

    # A restart after GC rebuilds the segment from its floor; reads are unchanged.
    node.kill()
    node.start().wait_ready()
    seg = await c.segment(0)
    assert seg["scl"] == 1500 and seg["records"] == 400 and seg["materialized_lsn"] == 1500
    await assert_pages(c, records, [1200, 1400, 1500])
    report = await c.json("GET", "/v1/segments/0/report")
    # The chain below the floor is forgotten; the report lists what is above it.
    assert report["floor"] == 1100 and report["scl"] == 1500
    assert [r[0] for r in report["records"]] == list(range(1101, 1501))


async def test_corrupt_stored_record_detected_not_served(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=ARGS + FAULTS)
    c = node_client(node)
    await c.put_segment(0, ["n1"], layout=LAYOUT)
    rng = random.Random(11)
    _chain, records = make_records(wire, 0, 1, 40, rng)
    log = await c.open_log()
    ack = await log.call(wire.frame(1, [(0, 1, records)], vdl=20))
    assert ack["results"]["0"]["scl"] == 40
    await c.wait_segment(0, lambda s: s["materialized_lsn"] == 20, what="materialized")

    victim = records[29]  # lsn 30: above the materialized point, so reads redo it
    await c.json("POST", f"/v1/debug/segments/0/fake-disk-corruption?lsn={victim.lsn}")
    status, body, _ = await read(c, 0, victim.page, 40)
    assert status == 500 and b"corrupt_record" in body
    # Other pages (not touched by the bad record) are still served correctly.
    other = next(r.page for r in records if r.page != victim.page)
    status, body, _ = await read(c, 0, other, 40)
    assert status == 200 and body == reference(records, other, 40)

    # Records: the valid prefix is served and the bad LSN flagged; never the bad bytes.
    status, body, headers = await c.request("GET", "/v1/segments/0/records", params={"after": "20"})
    assert status == 200 and headers["X-Tidemark-Corrupt-LSN"] == "30"
    assert decode_records(body) == records[20:29]
    status, body, _ = await c.request("GET", "/v1/segments/0/records", params={"after": "29"})
    assert status == 500 and b"corrupt_record" in body

    # Materialization meets it too: it stops before it and the status reports it.
    await log.call(wire.frame(2, [(0, 1, [])], vdl=40))
    seg = await c.wait_segment(0, lambda s: s["corrupt_lsn"] == 30, what="corruption reported")
    assert seg["materialized_lsn"] == 20
    metrics = (await c.request("GET", "/metrics"))[1].decode()
    assert "tidemark_corrupt_records" in metrics
    await log.close()
    assert node.proc.poll() is None


async def test_fake_corruption_endpoint_absent_by_default(node_factory, node_client):
    """Only `--enable-fault-injection` serves it; the environment (the switch it once
    had) turns nothing on."""
    node = node_factory("n1", extra_args=ARGS, env={"TIDEMARK_FAKE_DISK_CORRUPTION": "1"})
    c = node_client(node)
    await c.put_segment(0, ["n1"], layout=LAYOUT)
    for path in ("fake-disk-corruption?lsn=1", "fake-page-corruption?page=0"):
        status, _, _ = await c.request("POST", f"/v1/debug/segments/0/{path}")
        assert status in (404, 405)


async def test_corruption_made_offline_is_detected_after_restart(node_factory, node_client, wire):
    """Flip a byte in RocksDB while the node is down (a disk going bad at rest)."""
    import struct

    from rocksdict import Options, Rdict

    node = node_factory("n1", extra_args=ARGS)
    c = node_client(node)
    await c.put_segment(0, ["n1"], layout=LAYOUT)
    _chain, records = make_records(wire, 0, 1, 10, random.Random(3))
    log = await c.open_log()
    assert (await log.call(wire.frame(1, [(0, 1, records)])))["results"]["0"]["scl"] == 10
    await log.close()
    assert node.stop() == 0

    db = Rdict(str(node.data / "rocksdb"), Options(raw_mode=True))
    key = b"L" + struct.pack(">IQ", 0, 7)
    raw = bytearray(db[key])
    raw[-6] ^= 0x01
    db[key] = bytes(raw)
    db.close()

    node.start().wait_ready()
    assert (await c.segment(0))["scl"] == 10  # the chain is rebuilt from headers
    status, body, headers = await c.request("GET", "/v1/segments/0/records", params={"after": "0"})
    assert status == 200 and headers["X-Tidemark-Corrupt-LSN"] == "7"
    assert decode_records(body) == records[:6]
    status, body, _ = await read(c, 0, records[6].page, 10)
    assert status == 500 and b"corrupt_record" in body
