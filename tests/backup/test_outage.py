"""Priority 2: MinIO down for a while during the workload, then back: the backups lag,
catch up with no gap, and restores across the outage are exact."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import pytest

from tidemark_backup.objstore import open_store
from tidemark_compute.topology import Topology
from tidemark_protocol.node_auth import Role
from tidemark_restore.inventory import iso, load_inventory, parse_time, rebuild_volume
from tidemark_restore.status import status_of

from .conftest import backup_fleet, check_pages, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.timeout(240)]


def node_backup(url: str, topology: Topology) -> dict:
    request = urllib.request.Request(f"{url}/v1/status", headers=topology.headers(Role.ADMIN))
    with urllib.request.urlopen(request, timeout=3, context=topology.tls) as resp:
        return json.loads(resp.read())["backup"]


async def test_store_outage_catches_up_without_gap(tmp_path, s3_url, rig_minio_server):
    async with backup_fleet(tmp_path / "src", s3_url) as bf:
        # The workload runs until 3 s after the store is back (however long its restart
        # takes on a loaded machine), so every probed point below lies inside it.
        stop = asyncio.Event()
        work = asyncio.create_task(bf.workload(120, concurrency=8, seed=21, stop=stop))
        await asyncio.sleep(3)
        t_down = int(time.time() * 1e6)
        await asyncio.to_thread(rig_minio_server.stop)
        try:
            await asyncio.sleep(6)
            errors = [node_backup(n.url, bf.topology)["lastError"] for n in bf.fleet.nodes.values()]
            assert any(errors), "an unreachable store must show up as lastError"
            assert not work.done()  # the foreground never waits on S3
        finally:
            await asyncio.to_thread(rig_minio_server.start)
        t_up = int(time.time() * 1e6)
        await asyncio.sleep(3)
        stop.set()
        acked = await work
        assert acked > 0
        end_us = bf.marks[-1][1]
        assert end_us > t_up + 1_000_000, "the workload must outlast the outage"
        await wait_until(lambda: (status_of(s3_url)["latestRestorableTime"] or "") >= iso(end_us),
                         45, "backup to catch up after the outage")
    st = status_of(s3_url)
    assert st["problems"] == []
    assert len(st["restorableLsnIntervals"]) == 1, st["restorableLsnIntervals"]  # no gap
    assert parse_time(st["firstRecoverableTime"]) <= bf.marks[0][1] + 1
    store = open_store(s3_url)
    inv = load_inventory(store)
    points = [t_down - 1_000_000, t_down + 1_000_000, (t_down + t_up) // 2, t_up - 500_000,
              t_up + 1_000_000, end_us]
    for t in points:
        pages = rebuild_volume(store, inv, inv.lsn_for(t))
        check_pages(pages, bf.model, bf.marks, t)
