"""`tidemark bench write`: fleet write throughput and latency against a same-run baseline.

Baseline: one process writes the same 200-byte records to one RocksDB in synced batches
(what a single-node store with group commit would do on this machine). The fleet does
strictly more work per record (six copies, network, quorum), so the ratio says how
much of the machine's raw synced-write rate survives replication.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from tidemark_protocol.pages import patch_payload
from tidemark_protocol.records import Record, RecordFlags
from tidemark_protocol.writer_core import Change

from .writer import Writer

RECORD_PAYLOAD = 200
RECORDS_PER_MTR = 4

Progress = Callable[[str], None]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def baseline_rocksdb(seconds: float, batch_records: int = 64) -> dict:
    """Synced batches of encoded 200-byte records into one local RocksDB."""
    directory = Path(tempfile.mkdtemp(prefix="tidemark-baseline-"))
    db = Rdict(str(directory), Options(raw_mode=True))
    sync = WriteOptions()
    sync.sync = True
    payload = os.urandom(RECORD_PAYLOAD)
    lsn = 0
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        batch = WriteBatch(raw_mode=True)
        t0 = time.perf_counter()
        for _ in range(batch_records):
            lsn += 1
            record = Record(lsn, 0, lsn % 64, lsn - 1, 0, RecordFlags.CPL, payload)
            batch.put(lsn.to_bytes(8, "big"), record.encode())
        db.write(batch, sync)
        latencies.append((time.perf_counter() - t0) * 1000)
    elapsed = time.perf_counter() - started
    db.close()
    shutil.rmtree(directory, ignore_errors=True)
    return {
        "records_per_s": round(lsn / elapsed, 1),
        "batch_records": batch_records,
        "p99_ms": round(percentile(latencies, 0.99), 2),
    }


def changes_for_bench(rng: random.Random, page_count: int, page_size: int) -> list[Change]:
    data = rng.randbytes(RECORD_PAYLOAD - 4)
    return [
        Change(rng.randrange(page_count), patch_payload(rng.randrange(page_size - len(data)), data))
        for _ in range(RECORDS_PER_MTR)
    ]


async def closed_loop(writer: Writer, seconds: float, concurrency: int, seed: int = 7) -> dict:
    """As fast as the fleet goes: `concurrency` mini-transactions always in flight."""
    layout = writer.topology.layout
    rng = random.Random(seed)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def client() -> None:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await writer.commit(changes_for_bench(rng, layout.page_count, layout.page_size))
            latencies.append((time.perf_counter() - t0) * 1000)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return _summary(latencies, time.monotonic() - started)


async def open_loop(writer: Writer, seconds: float, commits_per_s: float, seed: int = 8) -> dict:
    """Commits arrive at a fixed rate, whatever the latency: latency at a given load."""
    layout = writer.topology.layout
    rng = random.Random(seed)
    latencies: list[float] = []
    pending: set[asyncio.Task] = set()

    async def one() -> None:
        t0 = time.perf_counter()
        await writer.commit(changes_for_bench(rng, layout.page_count, layout.page_size))
        latencies.append((time.perf_counter() - t0) * 1000)

    started = time.monotonic()
    interval = 1.0 / commits_per_s
    n = 0
    while time.monotonic() - started < seconds:
        n += 1
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        delay = started + n * interval - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        elif n % 64 == 0:
            await asyncio.sleep(0)
    await asyncio.wait_for(asyncio.gather(*pending), timeout=60)
    out = _summary(latencies, time.monotonic() - started)
    out["offered_commits_per_s"] = round(commits_per_s, 1)
    return out


def _summary(latencies: list[float], elapsed: float) -> dict:
    commits = len(latencies)
    records = commits * RECORDS_PER_MTR
    return {
        "commits_per_s": round(commits / elapsed, 1),
        "records_per_s": round(records / elapsed, 1),
        "mb_per_s": round(records * RECORD_PAYLOAD / elapsed / 1e6, 2),
        "p50_ms": round(percentile(latencies, 0.50), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "p999_ms": round(percentile(latencies, 0.999), 2),
    }


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
