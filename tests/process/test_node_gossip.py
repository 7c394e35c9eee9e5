"""Gossip between real node processes: holes filled from a peer, a restarted node
catching up with what it missed."""

from __future__ import annotations

import pytest

from tidemark_protocol.frames import decode_records

pytestmark = [pytest.mark.process, pytest.mark.timeout(150)]

GOSSIP = ["--gossip-interval", "0.3"]


async def test_gossip_fills_hole_and_restarted_node_catches_up(node_factory, node_client, wire):
    a = node_factory("a", "z1", extra_args=GOSSIP)
    b = node_factory("b", "z2", extra_args=GOSSIP)
    members = ["a", "b", "c", "d", "e", "f"]  # c..f are not running: gossip skips them
    peers = {"a": a.url, "b": b.url, "c": "http://127.0.0.1:9"}
    ca, cb = node_client(a), node_client(b)
    for c in (ca, cb):
        await c.put_segment(0, members, peers)

    chain = wire.LogChain(0)
    recs = [chain.record(lsn, lsn % 4, b"\0\0\0\0" + bytes([lsn % 256]) * 64) for lsn in range(1, 41)]

    # b gets everything but lsn 10: its SCL stops at 9, with records held above the hole.
    lb = await cb.open_log()
    ack = await lb.call(wire.frame(1, [(0, 1, recs[:9] + recs[10:])]))
    assert ack["results"]["0"]["scl"] == 9
    seg = await cb.segment(0)
    assert seg["holes"] and seg["max_lsn"] == 40

    # a gets everything; gossip lets b pull lsn 10 from a and its SCL reaches 40.
    la = await ca.open_log()
    assert (await la.call(wire.frame(1, [(0, 1, recs)])))["results"]["0"]["scl"] == 40
    seg = await cb.wait_segment(0, lambda s: s["scl"] == 40, what="hole filled by gossip")
    assert not seg["holes"] and seg["records"] == 40
    _, body, _ = await cb.request("GET", "/v1/segments/0/records", params={"after": "0"})
    assert decode_records(body) == recs

    # b stops (clean); a goes on; b restarts with its data and catches up from a.
    await lb.close()
    assert b.stop() == 0
    more = [chain.record(lsn, lsn % 4, b"\0\0\0\0" + bytes([lsn % 256]) * 64) for lsn in range(41, 541)]
    for i in range(0, 500, 100):
        ack = await la.call(wire.frame(2 + i, [(0, 1, more[i : i + 100])]))
    assert ack["results"]["0"]["scl"] == 540
    b.start().wait_ready()
    assert (await cb.segment(0))["scl"] == 40  # what it had, then gossip
    seg = await cb.wait_segment(0, lambda s: s["scl"] == 540, what="restarted node catch-up")
    assert seg["records"] == 540 and not seg["holes"]
    _, body, _ = await cb.request("GET", "/v1/segments/0/records", params={"after": "40", "limit": "1000"})
    assert decode_records(body) == more

    # Gossip counts show up in b's metrics.
    metrics = (await cb.request("GET", "/metrics"))[1].decode()
    assert "tidemark_gossip_records_pulled" in metrics
    await la.close()


async def test_gossip_respects_volume_epoch(node_factory, node_client, wire):
    """A peer at another volume epoch is not a gossip source (its log may hold records
    this segment's epoch has truncated, or lack a truncation it has)."""
    a = node_factory("a", "z1", extra_args=GOSSIP)
    b = node_factory("b", "z2", extra_args=GOSSIP)
    members = ["a", "b"]
    peers = {"a": a.url, "b": b.url}
    ca, cb = node_client(a), node_client(b)
    await ca.put_segment(1, members, peers, volume_epoch=2)
    await cb.put_segment(1, members, peers, volume_epoch=1)
    chain = wire.LogChain(1)
    recs = [chain.record(lsn, 16, b"\0\0\0\0x") for lsn in range(1, 11)]
    la = await ca.open_log()
    assert (await la.call(wire.frame(1, [(1, 1, recs)], volume_epoch=2)))["results"]["1"]["scl"] == 10
    await la.close()
    import asyncio

    await asyncio.sleep(1.5)  # several gossip rounds
    assert (await cb.segment(1))["scl"] == 0
    # Once sealed into the same epoch, b catches up.
    await cb.json("POST", "/v1/seal", json={"volume_epoch": 2, "truncations": []})
    await cb.wait_segment(1, lambda s: s["scl"] == 10, what="catch-up after seal")
