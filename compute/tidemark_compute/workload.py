"""A verifying workload: concurrent mini-transactions, then a check of every ack."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tidemark_protocol.pages import patch_payload
from tidemark_protocol.writer_core import Change

from .verify_model import SLOT, Model, VerifyResult, slot_content
from .writer import ReadFailed, Writer

log = structlog.get_logger("tidemark.workload")


@dataclass
class WorkloadStats:
    started: float = field(default_factory=time.monotonic)
    acked: int = 0
    failed: int = 0
    records: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    timeline: list[tuple[float, float]] = field(default_factory=list)  # (t, latency ms)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def plan_slots(rng: random.Random, page_count: int, slots_per_page: int) -> list[tuple[int, int]]:
    count = rng.randint(1, 3)
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < count:
        chosen.add((rng.randrange(page_count), rng.randrange(slots_per_page)))
    return sorted(chosen)


async def run_workload(
    writer: Writer,
    model: Model,
    seconds: float,
    concurrency: int = 32,
    seed: int = 1,
    stop: asyncio.Event | None = None,
    on_commit: Callable[[float], None] | None = None,
    drain_timeout: float = 30.0,
) -> WorkloadStats:
    """Commit mini-transactions for `seconds` (or until `stop`); in-flight ones then get
    up to `drain_timeout` to finish before they count as in doubt."""
    layout = writer.topology.layout
    slots_per_page = layout.page_size // SLOT
    rng = random.Random(seed)
    stats = WorkloadStats()
    deadline = time.monotonic() + seconds
    next_id = model.next_id

    async def one_client() -> None:
        nonlocal next_id
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            mtr = next_id
            next_id += 1
            slots = plan_slots(rng, layout.page_count, slots_per_page)
            changes = [
                Change(page, patch_payload(slot * SLOT, slot_content(mtr, page, slot)))
                for page, slot in slots
            ]
            started = time.perf_counter()
            cpl, fut = await writer.submit(changes)
            model.intent(mtr, cpl, slots)
            try:
                await fut
            except Exception as exc:  # fenced or closed: the outcome is in doubt
                stats.failed += 1
                log.warning("commit_failed", mtr=mtr, error=str(exc))
                return
            latency = (time.perf_counter() - started) * 1000
            now = time.time()
            model.ack(mtr, now)
            stats.acked += 1
            stats.records += len(changes)
            stats.latencies_ms.append(latency)
            stats.timeline.append((time.monotonic() - stats.started, latency))
            if on_commit:
                on_commit(latency)

    tasks = [asyncio.create_task(one_client()) for _ in range(concurrency)]
    try:
        await asyncio.wait_for(
            asyncio.gather(*tasks), timeout=max(0.0, deadline - time.monotonic()) + drain_timeout
        )
    except TimeoutError:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return stats


async def read_all_pages(
    writer: Writer, pages: list[int], timeout: float = 60.0
) -> dict[int, bytes]:
    """Read every page at one read point (the current VDL), retrying while segments catch up."""
    at = writer.vdl
    out: dict[int, bytes] = {}
    deadline = time.monotonic() + timeout
    sem = asyncio.Semaphore(16)

    async def one(page: int) -> None:
        async with sem:
            delay = 0.05
            while True:
                try:
                    out[page] = await writer.read_page(page, at)
                    return
                except ReadFailed:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 1.0)

    await asyncio.gather(*(one(p) for p in pages))
    return out


async def verify(writer: Writer, model: Model, timeout: float = 60.0) -> VerifyResult:
    pages = await read_all_pages(writer, model.pages(), timeout)
    return model.verify(pages)


def summarize(stats: WorkloadStats, seconds: float, result: VerifyResult | None) -> dict:
    elapsed = max(seconds, 1e-9)
    out = {
        "acked": stats.acked,
        "failed": stats.failed,
        "records": stats.records,
        "commits_per_s": round(stats.acked / elapsed, 1),
        "records_per_s": round(stats.records / elapsed, 1),
        "p50_ms": round(stats.percentile(0.50), 2),
        "p99_ms": round(stats.percentile(0.99), 2),
        "p999_ms": round(stats.percentile(0.999), 2),
        "lost": 0,
    }
    if result is not None:
        out["verify"] = result.to_json()
        out["lost"] = len(result.lost)
        out["verified"] = result.ok
    return out


def log_path(directory: Path, name: str | None) -> Path | None:
    return None if name is None else (directory / name if not Path(name).is_absolute() else Path(name))
