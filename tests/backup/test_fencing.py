"""Priority 3: a node whose generation is superseded is fenced (uploads nothing more,
deletes nothing; its PGs fail over), a dead uploader's PGs fail over with no gap, and
garbage or truncated objects in the bucket are reported and never restored."""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request

import pytest

from tidemark_backup import layout
from tidemark_backup.objstore import open_store
from tidemark_compute.topology import Topology
from tidemark_protocol.node_auth import Role
from tidemark_restore.inventory import iso, load_inventory, rebuild_volume
from tidemark_restore.status import status_of

from .conftest import backup_fleet, check_pages, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.timeout(240)]


def node_status(url: str, topology: Topology) -> dict:
    request = urllib.request.Request(f"{url}/v1/status", headers=topology.headers(Role.ADMIN))
    with urllib.request.urlopen(request, timeout=3, context=topology.tls) as resp:
        return json.loads(resp.read())


async def test_fencing_failover_and_garbage(tmp_path, s3_url):
    store = open_store(s3_url)
    async with backup_fleet(tmp_path / "src", s3_url) as bf:
        work = asyncio.create_task(bf.workload(12, concurrency=8, seed=31))
        await asyncio.sleep(2)
        a1 = bf.fleet.nodes["a1"]
        gen = node_status(a1.url, bf.topology)["generation"]
        # A newer generation of a1 registers (a replacement pod): the old one is fenced.
        store.put(layout.node_key("a1", gen + 1), b'{"node": "a1"}')
        await wait_until(lambda: node_status(a1.url, bf.topology)["backup"]["fenced"], 10, "a1 fenced")
        await asyncio.sleep(1.5)  # an upload in flight when the fence was seen may land
        mine = {o.key for o in store.list("") if o.node == "a1" and o.gen == gen}
        # The uploader of another PG dies: the next member takes over.
        bf.fleet.kill("b1")
        acked = await work
        assert acked > 0
        end_us = bf.marks[-1][1]
        await wait_until(lambda: (status_of(s3_url)["latestRestorableTime"] or "") >= iso(end_us),
                         45, "backups to fail over and catch up")
        assert {o.key for o in store.list("") if o.node == "a1" and o.gen == gen} == mine
    st = status_of(s3_url)
    assert len(st["restorableLsnIntervals"]) == 1, st["restorableLsnIntervals"]

    # Garbage: junk under a known prefix, a truncated copy of a real chunk and a bogus
    # snapshot under keys that look valid.
    inv = load_inventory(store)
    t_mid = bf.marks[len(bf.marks) // 2][1]
    target = inv.lsn_for(t_mid)
    _base, used = inv.cats[1].chain(target)
    chunk = used[-1]  # a chunk the restore at t_mid needs
    data = store.get(chunk.key)
    store.put(layout.chunk_key(1, chunk.start, chunk.end, chunk.epoch, "zz", 1), data[: len(data) // 2])
    store.put(layout.chunk_key(1, chunk.start, chunk.end + 3, chunk.epoch, "zy", 1), os.urandom(300))
    store.put("pg-00001/log/junk.bin", b"junk")
    store.put(layout.snap_key(2, target, chunk.epoch, "zz", 1), b"TMK1" + os.urandom(100))
    inv = load_inventory(store)
    assert any("junk.bin" in p for p in inv.problems)
    for t in [bf.marks[len(bf.marks) // 3][1], t_mid, end_us]:
        pages = rebuild_volume(store, inv, inv.lsn_for(t))
        check_pages(pages, bf.model, bf.marks, t)
    reported = "\n".join(inv.problems)
    assert "-zy-g000001.chunk" in reported and "-zz-g000001.snap" in reported, reported
    status = status_of(s3_url)
    assert status["problems"], "garbage must be reported by backup status"
