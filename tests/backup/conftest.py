"""Backup tests: a playground fleet streaming to the rig's real MinIO, a verifying
workload whose every commit is timed, and checks of restored pages against it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tidemark_backup.catalog import Timeline
from tidemark_compute.verify_model import SLOT, Model, parse_slot
from tidemark_compute.workload import run_workload
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod

_ips = itertools.count()


def base_ip() -> str:
    i = next(_ips)
    return f"127.{120 + (i % 50)}.{random.randint(1, 250)}.10"


@dataclass
class BackupFleet:
    directory: Path
    url: str
    fleet: fleet_mod.Fleet
    topology: object
    writer: Writer | None = None
    model: Model = field(default_factory=Model)
    marks: list[tuple[int, int]] = field(default_factory=list)

    async def workload(self, seconds: float, concurrency: int = 8, seed: int = 1, stop=None) -> int:
        assert self.writer is not None
        stats = await run_workload(self.writer, self.model, seconds, concurrency, seed, stop=stop)
        self.marks = self.writer.marks_since(0)[0]
        return stats.acked


@pytest.fixture
def s3_url(minio, monkeypatch) -> str:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", minio.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", minio.secret_key)
    monkeypatch.setenv("TIDEMARK_S3_ENDPOINT", minio.endpoint)
    return f"s3://{minio.bucket}/vol1"


@contextlib.asynccontextmanager
async def backup_fleet(directory: Path, url: str, pgs: int = 4, pages_per_pg: int = 16,
                       interval: float = 0.5, snapshot_interval: float = 3.0, ip: str | None = None,
                       key_files: list[Path] | None = None):
    """KEY_FILES: the nodes encrypt with the first (`--backup-key-file`)."""
    keys = {"backup_key_files": [str(k) for k in key_files]} if key_files else {}
    fleet, topology = await fleet_mod.up(
        directory, 2, pgs, pages_per_pg, 4096, ip or base_ip(), backup=url,
        # 64 KiB extents: the scale model's article "10 GB" unit is 16 pages of 4 KiB
        backup_options={"backup_interval": interval, "backup_snapshot_interval": snapshot_interval,
                        "backup_extent_kib": 64, **keys})
    bf = BackupFleet(directory, url, fleet, topology)
    try:
        bf.writer = await Writer.open(topology)
        yield bf
    finally:
        if bf.writer is not None:
            with contextlib.suppress(Exception):
                await bf.writer.close()
        fleet.down()


async def wait_until(pred, timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(pred)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(step)


def check_pages(pages: dict[int, bytes], model: Model, marks: list[tuple[int, int]], t_us: int) -> dict:
    """Exactly the commits acknowledged at or before T are visible, none after.

    The writer's own VDL marks are the exact acknowledgement instants: LSN L = VDL at T.
    Every slot must hold the newest write with CPL <= L (or be empty if none). Model
    times (taken by the client just after the ack) are checked too: every commit the
    client saw acknowledged at or before T is present; commits the client saw after T
    are absent unless their VDL mark is <= T (the in-doubt band between the ack and the
    client noticing it)."""
    L = Timeline(marks).lsn_at(t_us) or 0
    zero = bytes(4096)
    present_after_t = 0
    for (page, slot), writers in model.writes.items():
        data = pages.get(page, zero)[slot * SLOT : (slot + 1) * SLOT]
        holder = parse_slot(data, page, slot)
        committed = [model.mtrs[w] for w in writers if model.mtrs[w].cpl <= L]
        expect = max(committed, key=lambda m: m.cpl).mtr if committed else None
        assert holder == expect, f"slot ({page},{slot}) holds {holder}, expected {expect} (L={L})"
    for m in model.mtrs.values():
        if not m.acked:
            continue
        if m.commit_time * 1e6 <= t_us:
            assert m.cpl <= L, f"mtr {m.mtr} acked at {m.commit_time} <= T but cpl {m.cpl} > L {L}"
        elif m.cpl <= L:
            present_after_t += 1
    before = sum(1 for m in model.mtrs.values() if m.acked and m.cpl <= L)
    return {"lsn": L, "present": before, "in_doubt_band": present_after_t}


async def read_volume(topology, pages: list[int]) -> dict[int, bytes]:
    from tidemark_compute.workload import read_all_pages

    writer = await Writer.open(topology)
    try:
        return await read_all_pages(writer, pages, timeout=60)
    finally:
        await writer.close()
