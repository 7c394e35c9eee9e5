"""Segment hydration (rebuild) from peers, its bandwidth cap, fencing by membership
epoch and DELETE cleanup, on real node processes."""

from __future__ import annotations

import asyncio
import random
import struct
import time

import pytest

from tidemark_protocol.frames import decode_records
from tidemark_protocol.pages import page_at, patch_payload

pytestmark = [pytest.mark.process, pytest.mark.rebuild, pytest.mark.timeout(120)]

PAGE_SIZE = 4096
PAGES = 256
LAYOUT = {"pg_count": 2, "pages_per_pg": PAGES, "page_size": PAGE_SIZE}
SRC_ARGS = ["--gossip-interval", "0.5", "--materialize-interval", "0.05", "--materialize-chunk", "2000",
            "--materialize-min-batch", "500", "--gc-interval", "0.2", "--gc-log-tail", "0",
            "--scrub-interval", "0"]
NEW_ARGS = ["--gossip-interval", "0.3", "--materialize-interval", "0.1", "--scrub-interval", "0"]
FAULTS = ["--enable-fault-injection"]  # the fake disk corruption endpoints
MEMBERS = ["a", "b", "c", "d", "e", "f"]


def make_records(chain, start: int, count: int, rng: random.Random) -> list:
    out = []
    for lsn in range(start, start + count):
        page = rng.randrange(PAGES)
        if lsn <= PAGES:  # every page gets a full image first: a sizable snapshot
            out.append(chain.record(lsn, lsn - 1, rng.randbytes(PAGE_SIZE), full=True))
        else:
            data = rng.randbytes(rng.randrange(16, 200))
            out.append(chain.record(lsn, page, patch_payload(rng.randrange(PAGE_SIZE - len(data)), data)))
    return out


def reference(records, page: int, at: int) -> bytes:
    return page_at(records, page, at, PAGE_SIZE)


async def put(c, members, epoch=1, next_members=None, peers=None):
    body = {"layout": LAYOUT, "membership": {"epoch": epoch, "members": members, "next_members": next_members},
            "peers": peers or {}, "volume_epoch": 1}
    return await c.json("PUT", "/v1/segments/0", json=body)


async def send(streams, seq: int, records, vdl: int, pgmrpl: int = 0, mepoch: int = 1) -> None:
    for i in range(0, max(1, len(records)), 500):
        part = records[i : i + 500]
        hint = min(vdl, part[-1].lsn) if part else vdl  # a rising VDL, as a writer sends it
        low = min(pgmrpl, hint)  # and a writer's PGMRPL never exceeds its VDL
        acks = await asyncio.gather(
            *(s.call(frame_of(seq + i, part, hint, low, me)) for s, me in streams))
        for ack in acks:
            assert "error" not in ack["results"]["0"], ack


_WIRE = {}


def frame_of(seq, records, vdl, pgmrpl, mepoch):
    return _WIRE["frame"](seq, [(0, mepoch, records)], vdl=vdl, pgmrpl=pgmrpl)


async def sources(node_factory, node_client, wire, extra_args=()):
    _WIRE["frame"] = wire.frame
    nodes = [node_factory(n, z, extra_args=SRC_ARGS + list(extra_args)) for n, z in (("a", "z1"), ("b", "z2"), ("c", "z3"))]
    clients = [node_client(n) for n in nodes]
    peers = {n.name: n.url for n in nodes}
    for c in clients:
        await put(c, MEMBERS, peers=peers)
    streams = [(await c.open_log(), 1) for c in clients]
    return nodes, clients, peers, streams


async def hydrate(c, srcs: dict, bandwidth: int = 0, timeout: float = 60.0, during=None) -> tuple[dict, float]:
    t0 = time.monotonic()
    resp = await c.json("POST", "/v1/segments/0/hydrate", expect=202,
                        json={"sources": srcs, "bandwidth_bytes_per_s": bandwidth})
    assert resp["hydration"]["state"] == "snapshot"
    seen = set()
    while time.monotonic() - t0 < timeout:
        h = (await c.segment(0))["hydration"]
        seen.add(h["state"])
        if during is not None and h["state"] in ("snapshot", "log"):
            await during()
            during = None
        if h["state"] in ("done", "failed"):
            assert h["state"] == "done", h
            h["seen"] = seen
            return h, time.monotonic() - t0
        await asyncio.sleep(0.02)
    raise AssertionError(f"hydration not done in {timeout}s: {h}")


async def assert_same_pages(new, src, records, points, pages) -> None:
    for at in points:
        for page in pages:
            params = {"at": str(at), "tail": str(at)}
            s1, b1, _ = await new.request("GET", f"/v1/segments/0/pages/{page}", params=params)
            s2, b2, _ = await src.request("GET", f"/v1/segments/0/pages/{page}", params=params)
            assert s1 == 200 and s2 == 200, (at, page, s1, b1[:200], s2)
            assert b1 == b2 == reference(records, page, at), f"page {page} at {at}"


async def test_hydrate_from_three_sources_capped_and_with_live_writes(node_factory, node_client, wire):
    nodes, clients, peers, streams = await sources(node_factory, node_client, wire)
    rng = random.Random(5)
    chain = wire.LogChain(0)
    records = make_records(chain, 1, 4000, rng)
    # VDL 4000 (materialized), PGMRPL 3000: versions and log below ~3000 are GC'd, so a
    # new segment cannot be built from the log alone.
    await send(streams, 1, records, vdl=4000, pgmrpl=3000)
    for c in clients:
        # 90 s: under a loaded 2-core machine log GC was once seen still short of this at 30 s.
        await c.wait_segment(0, lambda s: s["materialized_lsn"] == 4000 and s["log_gc_lsn"] >= 2000,
                             timeout=90, what="materialized and log GC'd")
    more = make_records(chain, 4001, 3000, rng)  # above S: fetched as log
    await send(streams, 10_000, more, vdl=4000, pgmrpl=3000)
    records += more
    status, body, _ = await clients[0].request("GET", "/v1/segments/0/records", params={"after": "0"})
    assert status == 410  # the log alone does not reach back to the beginning

    srcs = dict(peers)
    # New segment g (replacing f): epoch 2 = {a..f} ∪ {a..e,g}; hydrate uncapped.
    g = node_factory("g", "z3", extra_args=NEW_ARGS)
    cg = node_client(g)
    nxt = ["a", "b", "c", "d", "e", "g"]
    await put(cg, MEMBERS, epoch=2, next_members=nxt, peers=peers)
    h1, t_uncapped = await hydrate(cg, srcs)
    seg = await cg.segment(0)
    assert seg["scl"] == 7000 and not seg["holes"]
    assert h1["pct"] == 100.0 and h1["bytes"] == h1["total_bytes"] > PAGES * PAGE_SIZE
    assert h1["snapshot_lsn"] == 4000 and h1["base_lsn"] == 4000 and h1["pages"] == PAGES
    assert {"snapshot", "log", "catching_up", "done"} >= h1["seen"]
    mb_s = h1["bytes"] / 1e6 / h1["seconds"]
    print(f"uncapped hydration: {h1['bytes']} bytes in {h1['seconds']:.3f}s = {mb_s:.1f} MB/s")
    _, body, _ = await cg.request("GET", "/v1/segments/0/records", params={"after": "4000"})
    assert decode_records(body) == records[4000:]
    sample = sorted(random.Random(1).sample(range(PAGES), 24))
    await assert_same_pages(cg, clients[1], records, [4000, 5500, 7000], sample)

    # Capped: the same bytes at well under the uncapped rate; meanwhile the writer sends
    # new records to the sources and to the hydrating segment (membership epoch 2).
    g2 = node_factory("g2", "z3", extra_args=NEW_ARGS)
    cg2 = node_client(g2)
    await put(cg2, MEMBERS, epoch=2, next_members=["a", "b", "c", "d", "e", "g2"], peers=peers)
    cap = int(h1["bytes"] / max(1.0, 4 * t_uncapped))
    live = make_records(chain, 7001, 200, rng)
    g2_stream = await cg2.open_log()

    async def write_live() -> None:
        await send(streams + [(g2_stream, 2)], 50_000, live, vdl=4000, pgmrpl=3000)

    h2, t_capped = await hydrate(cg2, srcs, bandwidth=cap, during=write_live)
    records += live
    print(f"capped at {cap} B/s: {h2['bytes']} bytes in {h2['seconds']:.3f}s (uncapped {t_uncapped:.3f}s)")
    assert t_capped > 2 * t_uncapped
    assert h2["bytes"] / h2["seconds"] < cap * 1.3
    seg = await cg2.wait_segment(0, lambda s: s["scl"] == 7200, what="SCL with the live records")
    assert seg["records"] == 3200 and not seg["holes"]
    _, body, _ = await cg2.request("GET", "/v1/segments/0/records", params={"after": "4000", "limit": "5000"})
    assert decode_records(body) == records[4000:]
    # The first new segment catches up with the live records by gossip.
    await cg.wait_segment(0, lambda s: s["scl"] == 7200, what="gossip after hydration")
    # Materialization resumes on the new segments.
    await send(streams + [(g2_stream, 2)], 90_000, [], vdl=7200, pgmrpl=4000)
    await cg2.wait_segment(0, lambda s: s["materialized_lsn"] == 7200, what="materialized")
    await assert_same_pages(cg2, clients[2], records, [4000, 7100, 7200], sample)
    for s, _ in streams:
        await s.close()
    await g2_stream.close()

    # A hydrated segment survives a restart (its chain starts at the snapshot's base).
    g.kill()
    g.start().wait_ready()
    seg = await cg.segment(0)
    assert seg["scl"] == 7200 and not seg["holes"] and seg["gc_lsn"] == 4000
    await assert_same_pages(cg, clients[0], records, [4000, 7200], sample[:8])
    # ... and still says `done`: a repairer resuming after its own restart asks again and
    # gets 200 with nothing started, not a second rebuild.
    assert seg["hydration"]["state"] == "done", seg["hydration"]
    again = await cg.json("POST", "/v1/segments/0/hydrate", expect=200,
                          json={"sources": srcs, "bandwidth_bytes_per_s": 0})
    assert again["hydration"]["state"] == "done"
    assert (await cg.segment(0))["hydration"]["state"] == "done"

    # A rebuild cut short by a crash says so after the restart, and can simply be redone.
    g3 = node_factory("g3", "z3", extra_args=NEW_ARGS)
    cg3 = node_client(g3)
    await put(cg3, MEMBERS, epoch=2, next_members=["a", "b", "c", "d", "e", "g3"], peers=peers)
    await cg3.json("POST", "/v1/segments/0/hydrate", expect=202,
                   json={"sources": srcs, "bandwidth_bytes_per_s": 400_000})
    await cg3.wait_segment(0, lambda s: s["hydration"]["bytes"] > 300_000, what="hydration under way")
    g3.kill()
    g3.start().wait_ready()
    h = (await cg3.segment(0))["hydration"]
    assert h["state"] == "failed" and "restart" in h["error"]
    h3, _ = await hydrate(cg3, srcs)
    seg = await cg3.segment(0)
    assert seg["scl"] == 7200 and not seg["holes"]
    await assert_same_pages(cg3, clients[1], records, sorted({h3["base_lsn"], 7200}), sample[:8])


async def test_hydrate_refetches_corrupt_source_copies(node_factory, node_client, wire):
    nodes, clients, peers, streams = await sources(node_factory, node_client, wire, extra_args=FAULTS)
    rng = random.Random(9)
    chain = wire.LogChain(0)
    records = make_records(chain, 1, 600, rng)
    await send(streams, 1, records[:400], vdl=400, pgmrpl=300)
    for c in clients:
        await c.wait_segment(0, lambda s: s["materialized_lsn"] == 400, what="materialized")
    await send(streams, 1000, records[400:], vdl=400, pgmrpl=300)
    # Bad copies on a and b (c is clean): records above S, and a page version on a.
    for lsn in range(401, 601, 10):
        await clients[0].json("POST", f"/v1/debug/segments/0/fake-disk-corruption?lsn={lsn}")
        await clients[1].json("POST", f"/v1/debug/segments/0/fake-disk-corruption?lsn={lsn + 5}")
    bad_page = records[399].page
    await clients[0].json("POST", f"/v1/debug/segments/0/fake-page-corruption?page={bad_page}&lsn=400")

    g = node_factory("g", "z3", extra_args=NEW_ARGS)
    cg = node_client(g)
    await put(cg, MEMBERS, epoch=2, next_members=["a", "b", "c", "d", "e", "g"], peers=peers)
    h, _ = await hydrate(cg, {"a": peers["a"], "b": peers["b"], "c": peers["c"]})
    assert h["refetched"] >= 2
    seg = await cg.segment(0)
    assert seg["scl"] == 600
    _, body, _ = await cg.request("GET", "/v1/segments/0/records", params={"after": "400"})
    assert decode_records(body) == records[400:]
    await assert_same_pages(cg, clients[2], records, [400, 600], sorted({bad_page, 0, 1, 2, 100}))
    for s, _ in streams:
        await s.close()


async def test_membership_epoch_fencing_and_delete_cleanup(node_factory, node_client, wire):
    from rocksdict import Options, Rdict

    node = node_factory("a", extra_args=NEW_ARGS)
    c = node_client(node)
    await put(c, MEMBERS, epoch=1, peers={"b": "http://127.0.0.1:9"})
    chain = wire.LogChain(0)
    recs = make_records(chain, 1, 300, random.Random(2))
    log = await c.open_log()
    assert (await log.call(wire.frame(1, [(0, 1, recs[:100])], vdl=100)))["results"]["0"]["scl"] == 100
    # The segment was moved meanwhile: the executor's newer membership arrives.
    await put(c, ["a", "b", "c", "d", "e", "g"], epoch=3, peers={"g": "http://127.0.0.1:10"})
    seg = await c.segment(0)
    assert seg["membership_epoch"] == 3
    ack = await log.call(wire.frame(2, [(0, 1, recs[100:200])]))
    assert ack["results"]["0"]["error"] == "stale_membership" and ack["results"]["0"]["scl"] == 100
    ack = await log.call(wire.frame(3, [(0, 3, recs[100:200])], vdl=200))
    assert ack["results"]["0"] == {"scl": 200}
    # An older PUT does not roll the membership back.
    await put(c, MEMBERS, epoch=2)
    assert (await c.segment(0))["membership_epoch"] == 3
    await c.wait_segment(0, lambda s: s["materialized_lsn"] == 200, what="materialized")
    await c.json("DELETE", "/v1/segments/0")
    assert (await c.status())["segments"] == []
    status, body, _ = await c.request("GET", "/v1/segments/0/records")
    assert status == 404 and b"unknown_segment" in body
    await log.close()
    assert node.stop() == 0
    db = Rdict(str(node.data / "rocksdb"), Options(raw_mode=True))
    try:
        left = [k for k in db.keys() if k[:1] in (b"L", b"X", b"V", b"M") and k[1:5] == struct.pack(">I", 0)]
    finally:
        db.close()
    assert left == []


def parse_snapshot(body: bytes) -> tuple[dict, list[tuple], tuple]:
    """A snapshot stream (format 1 or 2) → header JSON, entries, trailer; checks every CRC."""
    import json

    import google_crc32c

    u32 = struct.Struct("<I")
    assert body[:4] == b"TMSN"
    (n,) = u32.unpack_from(body, 4)
    assert u32.unpack_from(body, 8 + n)[0] == google_crc32c.value(body[: 8 + n])
    info = json.loads(body[8 : 8 + n])
    off = 12 + n

    def entries(buf: bytes, pos: int, stop: int | None) -> tuple[list[tuple], int]:
        out = []
        while (stop is None and buf[pos : pos + 1] in (b"P", b"B")) or (stop is not None and pos < stop):
            tag = buf[pos : pos + 1]
            if tag == b"P":
                page, lsn, ln = struct.unpack_from("<QQI", buf, pos + 1)
                value = buf[pos + 21 : pos + 21 + ln]
                assert u32.unpack_from(value)[0] == google_crc32c.value(value[4:])
                out.append((page, lsn, value))
                pos += 21 + ln
            else:
                out.append(struct.unpack_from("<QQ", buf, pos + 1) + (None,))
                pos += 17
        return out, pos

    got: list[tuple] = []
    frames = 0
    if info["format"] == 2:
        while body[off : off + 1] == b"F":
            count, blen = struct.unpack_from("<II", body, off + 1)
            frame_end = off + 9 + blen
            assert u32.unpack_from(body, frame_end)[0] == google_crc32c.value(body[off:frame_end])
            part, pos = entries(body, off + 9, frame_end)
            assert pos == frame_end and len(part) == count
            got += part
            frames += 1
            off = frame_end + 4
        info["frames"] = frames
    else:
        got, off = entries(body, off, None)
    assert body[off : off + 1] == b"E"
    assert u32.unpack_from(body, off + 25)[0] == google_crc32c.value(body[off : off + 25])
    assert len(body) == off + 29
    return info, got, struct.unpack_from("<QQQ", body, off + 1)


async def test_snapshot_framed_format(node_factory, node_client, wire):
    """Format 2 (the default; `?format=2`) carries the entries in CRC-checked ~2 MiB
    frames; any other format is refused before anything is pinned or streamed."""
    _WIRE["frame"] = wire.frame
    node = node_factory("a", "z1", extra_args=SRC_ARGS)
    c = node_client(node)
    await put(c, MEMBERS)
    log = await c.open_log()
    chain = wire.LogChain(0)
    records = make_records(chain, 1, 600, random.Random(3))
    await send([(log, 1)], 1, records, vdl=600, pgmrpl=0)
    await c.wait_segment(0, lambda s: s["materialized_lsn"] == 600, what="materialized")
    s1, b1, _ = await c.request("GET", "/v1/segments/0/snapshot")
    s2, b2, h2 = await c.request("GET", "/v1/segments/0/snapshot", params={"format": "2"})
    assert s1 == 200 and s2 == 200
    assert h2["X-Tidemark-Snapshot-LSN"] == "600"
    info1, e1, t1 = parse_snapshot(b1)
    info2, e2, t2 = parse_snapshot(b2)
    assert info1["format"] == info2["format"] == 2  # the default, and the only format
    assert e1 == e2 and len(e2) == PAGES and t1 == t2 == (PAGES, 600, info2["base_lsn"])
    assert info2["frames"] == 1  # 256 pages of 4 KiB (1 MiB): one frame
    assert [p for p, _l, _v in e2] == list(range(PAGES))
    for page, lsn, value in e2[:: 37]:
        assert value[4:] == reference(records, page, lsn)
    for bad in ("1", "3", "x"):  # format 1 (unframed) had no reader left: gone
        status, body, _ = await c.request("GET", "/v1/segments/0/snapshot", params={"format": bad})
        assert status == 400 and b"format" in body
    await log.close()


def test_receiver_checks_each_frame_entry():
    """The receiving side of format 2: a page whose CRC fails is set aside for a refetch
    (never stored); a page outside the PG or above the base, or a frame whose entry
    count or length does not add up, fails the whole source."""
    import google_crc32c

    from tidemark_node.hydration.errors import SourceError
    from tidemark_node.hydration.frame_parser import parse_frame
    from tidemark_protocol.layout import VolumeLayout

    layout = VolumeLayout(pg_count=2, pages_per_pg=PAGES, page_size=PAGE_SIZE)

    def entry(page: int, lsn: int, image: bytes, good: bool = True) -> bytes:
        crc = google_crc32c.value(image) ^ (0 if good else 1)
        value = struct.pack("<I", crc) + image
        return b"P" + struct.pack("<QQI", page, lsn, len(value)) + value

    img = bytes(range(256)) * (PAGE_SIZE // 256)
    pg0 = [p for p in range(layout.page_count) if layout.pg_of(p) == 0][:3]
    body = entry(pg0[0], 5, img) + entry(pg0[1], 6, img, good=False) + b"B" + struct.pack("<QQ", pg0[2], 7)
    stored = []
    good, bad = parse_frame(body, 3, 0, layout, 10, lambda k, v: stored.append((k, v)))
    assert good == 1 and bad == [(pg0[1], 6), (pg0[2], 7)] and len(stored) == 1
    assert stored[0][1][4:] == img
    other = next(p for p in range(layout.page_count) if layout.pg_of(p) == 1)
    for wrong, count in ((entry(other, 5, img), 1), (entry(pg0[0], 11, img), 1), (body, 4), (body, 2),
                         (body[:-3], 3), (b"Z" + body, 4)):
        with pytest.raises(SourceError):
            parse_frame(wrong, count, 0, layout, 10, lambda k, v: None)
