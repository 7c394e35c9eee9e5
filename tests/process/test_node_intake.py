"""Storage node intake: segments, acks with SCL, durability, holes, malformed frames."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest

from tidemark_protocol.frames import decode_records
from tidemark_protocol.records import Record, RecordFlags, crc32c

pytestmark = [pytest.mark.process, pytest.mark.timeout(120)]

MEMBERS = ["n1", "n2", "n3", "n4", "n5", "n6"]


async def test_segments_batches_report_status(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    assert (await c.put_segment(0, MEMBERS)) == {"pg": 0, "scl": 0}
    assert (await c.put_segment(1, MEMBERS)) == {"pg": 1, "scl": 0}
    assert (await c.put_segment(0, MEMBERS)) == {"pg": 0, "scl": 0}  # idempotent

    c0, c1 = wire.LogChain(0), wire.LogChain(1)
    r0 = [c0.record(1, 0, b"\0\0\0\0a"), c0.record(3, 1, b"\0\0\0\0b")]
    r1 = [c1.record(2, 16, b"\0\0\0\0c", cpl=False), c1.record(4, 17, b"\0\0\0\0d")]
    log = await c.open_log()
    ack = await log.call(wire.frame(7, [(0, 1, r0), (1, 1, r1), (3, 1, [])], vdl=2))
    assert ack["seq"] == 7
    assert ack["results"]["0"] == {"scl": 3}
    assert ack["results"]["1"] == {"scl": 4}
    assert ack["results"]["3"]["error"] == "unknown_segment"

    # Duplicates (a writer resend) are acked without being stored twice.
    ack = await log.call(wire.frame(8, [(0, 1, r0)], vdl=4))
    assert ack == {"seq": 8, "results": {"0": {"scl": 3}}}

    # Pipelined frames: many in flight, acks in order, all with SCL.
    chain = wire.LogChain(1)
    chain.last, chain.page_last = 4, {16: 2, 17: 4}
    lsn = 4
    for seq in range(100, 140):
        recs = []
        for _ in range(25):
            lsn += 1
            recs.append(chain.record(lsn, 16 + lsn % 16, b"\0\0\0\0" + b"x" * 200))
        await log.send(wire.frame(seq, [(1, 1, recs)], vdl=lsn))
    acks = [await log.recv() for _ in range(40)]
    assert [a["seq"] for a in acks] == list(range(100, 140))
    assert acks[-1]["results"]["1"]["scl"] == lsn
    await log.close()

    status = await c.status()
    assert status["node"] == "n1" and status["zone"] == "z1" and status["generation"] == 1
    assert status["disk_bytes"] > 0
    segs = {s["pg"]: s for s in status["segments"]}
    assert segs[0]["scl"] == 3 and segs[0]["records"] == 2 and segs[0]["holes"] is False
    assert segs[1]["scl"] == lsn and segs[1]["records"] == 2 + 1000
    assert segs[0]["volume_epoch"] == 1 and segs[0]["membership_epoch"] == 1

    report = await c.json("GET", "/v1/segments/0/report")
    assert report["segment"] == "n1" and report["scl"] == 3 and report["volume_epoch"] == 1
    assert report["truncations"] == [] and report["floor"] == 0
    assert report["records"] == [[1, 0, int(RecordFlags.CPL)], [3, 1, int(RecordFlags.CPL)]]

    status_code, body, headers = await c.request("GET", "/v1/segments/0/records", params={"after": "0"})
    assert status_code == 200 and headers["X-Tidemark-SCL"] == "3"
    assert decode_records(body) == r0
    _, body, _ = await c.request("GET", "/v1/segments/1/records", params={"after": "2", "upto": "10", "limit": "3"})
    assert [r.lsn for r in decode_records(body)] == [4, 5, 6]

    metrics = (await c.request("GET", "/metrics"))[1].decode()
    assert "tidemark_records_received_total" in metrics and "tidemark_batches_total" in metrics
    assert "tidemark_sync_seconds" in metrics

    # Unknown segment and bad admin requests are clear refusals.
    err = await c.json("GET", "/v1/segments/9/report", expect=404)
    assert err["error"] == "unknown_segment"
    err = await c.json("PUT", "/v1/segments/2", expect=400, data=b"{not json")
    assert err["error"] == "malformed"
    err = await c.json("PUT", "/v1/segments/2", expect=400, json={"layout": {}})
    assert err["error"] == "malformed"

    # DELETE drops the segment.
    await c.json("DELETE", "/v1/segments/0")
    assert [s["pg"] for s in (await c.status())["segments"]] == [1]


async def test_ack_only_after_durable_kill9(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    await c.put_segment(2, MEMBERS)
    chain = wire.LogChain(2)
    log = await c.open_log()
    lsn = 0
    for seq in range(1, 31):
        recs = []
        for _ in range(40):
            lsn += 1
            recs.append(chain.record(lsn, 32 + lsn % 16, b"\0\0\0\0" + bytes([lsn % 256]) * 200))
        await log.send(wire.frame(seq, [(2, 1, recs)]))
    acks = [await log.recv() for _ in range(30)]
    acked_scl = acks[-1]["results"]["2"]["scl"]
    assert acked_scl == lsn
    node.kill()  # SIGKILL right after the last ack: no clean shutdown, no flush
    await log.close()

    node.start().wait_ready()
    seg = await c.segment(2)
    assert seg["scl"] == acked_scl and seg["records"] == lsn
    assert (await c.status())["generation"] == 2
    _, body, _ = await c.request("GET", "/v1/segments/2/records", params={"after": "0", "limit": "100000"})
    records = decode_records(body)
    assert [r.lsn for r in records] == list(range(1, lsn + 1))
    assert records[-1].payload == b"\0\0\0\0" + bytes([lsn % 256]) * 200

    # A clean stop (SIGTERM) exits 0 promptly, even with a writer's stream open, and
    # keeps everything too.
    log = await c.open_log()
    t0 = time.monotonic()
    assert await asyncio.to_thread(node.stop) == 0  # the loop stays free to answer the close
    assert time.monotonic() - t0 < 10
    await log.close()
    node.start().wait_ready()
    assert (await c.segment(2))["scl"] == acked_scl
    assert (await c.status())["generation"] == 3


async def test_hole_stops_scl(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    await c.put_segment(0, MEMBERS)
    chain = wire.LogChain(0)
    recs = [chain.record(lsn, 0, b"\0\0\0\0z") for lsn in range(1, 11)]
    log = await c.open_log()
    ack = await log.call(wire.frame(1, [(0, 1, recs[:4] + recs[5:])]))  # lsn 5 missing
    assert ack["results"]["0"]["scl"] == 4
    seg = await c.segment(0)
    assert seg["holes"] is True and seg["max_lsn"] == 10 and seg["records"] == 9
    ack = await log.call(wire.frame(2, [(0, 1, [recs[4]])]))
    assert ack["results"]["0"]["scl"] == 10
    assert (await c.segment(0))["holes"] is False


def _recrc(frame: bytes) -> bytes:
    """Fix up a tampered frame's CRC so the check inside it is what refuses it."""
    body = frame[:-4]
    return body + struct.pack("<I", crc32c(body))


def _garbage_frames(wire, good: bytes) -> dict[str, bytes]:
    chain = wire.LogChain(0)
    bad_link = Record(5, 0, 0, 9, 0, RecordFlags.CPL, b"\0\0\0\0q")  # back-link above lsn
    wrong_pg = wire.LogChain(1).record(5, 0, b"\0\0\0\0q")
    corrupt_record = bytearray(wire.frame(3, [(0, 1, [chain.record(5, 0, b"\0\0\0\0q")])]))
    corrupt_record[-10] ^= 0xFF  # inside the record's payload
    return {
        "garbage": b"hello, storage node!" * 5,
        "empty": b"",
        "bad_crc": good[:-1] + bytes([good[-1] ^ 1]),
        "truncated": good[: len(good) // 2],
        "wrong_magic": b"XXXX" + good[4:],
        "bad_backlink": wire.frame(4, [(0, 1, [bad_link])]),
        "pg_mismatch": wire.frame(5, [(0, 1, [wrong_pg])]),
        "corrupt_record": bytes(corrupt_record),
        "corrupt_record_valid_frame_crc": _recrc(bytes(corrupt_record)),
        "huge_count": _recrc(good[:52] + struct.pack("<I", 1 << 30) + good[56:]),
        "extra_groups": _recrc(good[:36] + struct.pack("<I", 5) + good[40:]),
        "trailing_bytes": _recrc(good[:-4] + b"junk" + good[-4:]),
    }


async def test_malformed_frames_refused_node_keeps_serving(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    await c.put_segment(0, MEMBERS)
    chain = wire.LogChain(0)
    first = [chain.record(1, 0, b"\0\0\0\0a"), chain.record(2, 1, b"\0\0\0\0b")]
    log = await c.open_log()
    assert (await log.call(wire.frame(1, [(0, 1, first)])))["results"]["0"]["scl"] == 2

    good = wire.frame(2, [(0, 1, [chain.record(3, 0, b"\0\0\0\0c")])])
    for name, data in _garbage_frames(wire, good).items():
        ack = await log.call(data)
        assert ack["seq"] is None and ack["error"] == "malformed", (name, ack)
        assert ack["message"], name
    await log.ws.send_str("not a frame")
    ack = await log.recv()
    assert ack["error"] == "malformed"
    seg = await c.segment(0)
    assert seg["scl"] == 2 and seg["records"] == 2 and seg["max_lsn"] == 2  # nothing stored

    # The same connection still works, and so does a new one.
    assert (await log.call(good))["results"]["0"]["scl"] == 3
    await log.close()
    log2 = await c.open_log()
    ack = await log2.call(wire.frame(9, [(0, 1, [chain.record(4, 1, b"\0\0\0\0d")])]))
    assert ack == {"seq": 9, "results": {"0": {"scl": 4}}}
    await log2.close()
    assert node.proc.poll() is None
    metrics = (await c.request("GET", "/metrics"))[1].decode()
    assert "tidemark_malformed_frames" in metrics

    # Malformed HTTP requests too.
    for params in ({"after": "x"}, {"after": "-1"}):
        err = await c.json("GET", "/v1/segments/0/records", expect=400, params=params)
        assert err["error"] == "malformed"
    err = await c.json("POST", "/v1/seal", expect=400, json={"truncations": "nope"})
    assert err["error"] == "malformed"
    status, _, _ = await c.request("GET", "/livez")
    assert status == 200


async def test_epochs_and_seal(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    await c.put_segment(0, MEMBERS, volume_epoch=3, membership_epoch=2)
    await c.put_segment(1, MEMBERS, volume_epoch=3, membership_epoch=2)
    chain = wire.LogChain(0)
    recs = [chain.record(lsn, lsn % 3, b"\0\0\0\0e") for lsn in range(1, 21)]
    log = await c.open_log()
    ack = await log.call(wire.frame(1, [(0, 2, recs)], volume_epoch=3, vdl=10))
    assert ack["results"]["0"] == {"scl": 20}

    more = [chain.record(21, 0, b"\0\0\0\0f")]
    ack = await log.call(wire.frame(2, [(0, 2, more)], volume_epoch=2))
    assert ack["results"]["0"]["error"] == "stale_epoch" and ack["results"]["0"]["scl"] == 20
    ack = await log.call(wire.frame(3, [(0, 2, more)], volume_epoch=4))
    assert ack["results"]["0"]["error"] == "needs_seal" and ack["results"]["0"]["scl"] == 20
    ack = await log.call(wire.frame(4, [(0, 1, more)], volume_epoch=3))  # old membership epoch
    assert ack["results"]["0"]["error"] in ("stale_epoch", "stale_membership")
    assert (await c.segment(0))["records"] == 20

    # Seal at epoch 4 truncating (15, 100]: records 16..20 go, SCL drops to 15.
    err = await c.json("POST", "/v1/seal", expect=409,
                       json={"volume_epoch": 2, "truncations": [[15, 100]], "pgs": [0]})
    assert err["error"] == "stale_epoch"
    res = await c.json("POST", "/v1/seal", json={"volume_epoch": 4, "truncations": [[15, 100]]})
    assert res == {"results": {"0": {"scl": 15}, "1": {"scl": 0}}}
    seg = await c.segment(0)
    assert seg["scl"] == 15 and seg["records"] == 15 and seg["volume_epoch"] == 4
    report = await c.json("GET", "/v1/segments/0/report")
    assert report["truncations"] == [[15, 100]] and report["volume_epoch"] == 4
    assert [r[0] for r in report["records"]] == list(range(1, 16))

    # The old epoch is now stale; strays in the truncated range are ignored at epoch 4;
    # new records above the range chain onto 15.
    ack = await log.call(wire.frame(5, [(0, 2, more)], volume_epoch=3))
    assert ack["results"]["0"]["error"] == "stale_epoch"
    ack = await log.call(wire.frame(6, [(0, 2, more)], volume_epoch=4))
    assert ack["results"]["0"] == {"scl": 15}
    assert (await c.segment(0))["records"] == 15
    nxt = wire.LogChain(0)
    nxt.last = 15
    ack = await log.call(wire.frame(7, [(0, 2, [nxt.record(101, 0, b"\0\0\0\0g")])], volume_epoch=4))
    assert ack["results"]["0"] == {"scl": 101}
    await log.close()

    # All of it survives a restart.
    node.kill()
    node.start().wait_ready()
    seg = await c.segment(0)
    assert seg["scl"] == 101 and seg["volume_epoch"] == 4 and seg["records"] == 16
    report = await c.json("GET", "/v1/segments/0/report")
    assert report["truncations"] == [[15, 100]]


async def test_group_commit_across_connections(node_factory, node_client, wire):
    """Frames from several connections arriving during one sync share the next sync."""
    import re

    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    c = node_client(node)
    pgs = [0, 1, 2, 3]
    for pg in pgs:
        await c.put_segment(pg, MEMBERS)

    async def writer(pg: int) -> int:
        chain = wire.LogChain(pg)
        log = await c.open_log()
        lsn = pg  # disjoint LSNs per PG: lsn = pg + 4k
        for seq in range(1, 31):
            recs = []
            for _ in range(10):
                lsn += 4
                recs.append(chain.record(lsn, pg * 16 + lsn % 16, b"\0\0\0\0" + b"g" * 150))
            await log.send(wire.frame(seq, [(pg, 1, recs)]))
        acks = [await log.recv() for _ in range(30)]
        await log.close()
        assert [a["seq"] for a in acks] == list(range(1, 31))
        return acks[-1]["results"][str(pg)]["scl"]

    scls = await asyncio.wait_for(asyncio.gather(*(writer(pg) for pg in pgs)), 60)
    assert scls == [pg + 4 * 300 for pg in pgs]
    metrics = (await c.request("GET", "/metrics"))[1].decode()
    commits = float(re.search(r"^tidemark_commits_total\{[^}]*\} (\S+)$", metrics, re.M).group(1))
    assert commits < 120, f"{commits} synced writes for 120 frames: no group commit"
