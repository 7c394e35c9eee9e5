"""Priority 1: restore to several random points T: exactly the commits at or before T."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from tidemark_backup.objstore import open_store
from tidemark_compute.topology import load_topology
from tidemark_playground import fleet as fleet_mod
from tidemark_restore.inventory import iso, load_inventory, parse_time, rebuild_volume
from tidemark_restore.status import status_of

from .conftest import backup_fleet, base_ip, check_pages, read_volume, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.timeout(240)]


async def test_restore_random_points_exact_commits(tmp_path, s3_url):
    async with backup_fleet(tmp_path / "src", s3_url) as bf:
        await bf.workload(8, concurrency=8, seed=11)
        end_us = bf.marks[-1][1]
        # Backups are asynchronous: wait (bounded) until the window reaches the end.
        await wait_until(lambda: (status_of(s3_url)["latestRestorableTime"] or "") >= iso(end_us),
                         30, "backup to catch up with the workload")
    st = status_of(s3_url)
    assert st["problems"] == [] and st["lastError"] is None
    first, latest = parse_time(st["firstRecoverableTime"]), parse_time(st["latestRestorableTime"])
    assert first <= bf.marks[0][1] + 1 and latest >= end_us
    store = open_store(s3_url)
    inv = load_inventory(store)
    rng = random.Random(5)
    points = sorted(rng.randint(first, end_us) for _ in range(6)) + [end_us]
    results = []
    for t in points:
        pages = rebuild_volume(store, inv, inv.lsn_for(t))
        results.append(check_pages(pages, bf.model, bf.marks, t))
    assert results[-1]["present"] == sum(m.acked for m in bf.model.mtrs.values())
    assert len({r["lsn"] for r in results}) >= 4  # genuinely different points
    # End to end once: `tidemark restore` into a new fleet, read back through a writer.
    t = points[len(points) // 2]
    out_dir = tmp_path / "restored"
    proc = subprocess.run(
        [sys.executable, "-m", "tidemark_cli.main", "restore", "--from", s3_url, "--to-time", iso(t),
         "--dir", str(out_dir), "--base-ip", base_ip(), "--json"],
        capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    restored = fleet_mod.Fleet.load(out_dir)
    try:
        pages = await read_volume(load_topology(out_dir), bf.model.pages())
        check_pages(pages, bf.model, bf.marks, t)
        assert result["lsn"] == inv.lsn_for(t)
        # Installed straight into the segments (no writer replay): a writer opened it at L.
        assert result["new_vdl"] >= result["lsn"] and result["problems"] == []
        assert result["pages"] == len(rebuild_volume(store, inv, result["lsn"]))
    finally:
        restored.down()
