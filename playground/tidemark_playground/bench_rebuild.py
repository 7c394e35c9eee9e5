"""`tidemark bench rebuild`: rebuild a lost node's segments under load, against a raw
copy of the same bytes between two processes over loopback in the same run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp

from tidemark_compute.bench_write import RECORDS_PER_MTR, changes_for_bench, closed_loop
from tidemark_compute.topology import (
    Topology,
    load_topology,
    membership_source,
    record_volume_epoch,
)
from tidemark_compute.writer import Writer
from tidemark_protocol.node_auth import Role
from tidemark_protocol.writer_core import Change

from . import fleet as fleet_mod
from .supervisor import read_repairs

Say = Callable[[str], None]

# A throw-away file server: the raw-copy baseline (aiohttp both ends, like hydration).
_SERVER = r"""
import sys
from aiohttp import web
path = sys.argv[1]
async def get(request):
    resp = web.StreamResponse()
    await resp.prepare(request)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            await resp.write(chunk)
    return resp
app = web.Application()
app.router.add_get("/blob", get)
web.run_app(app, host=sys.argv[2], port=int(sys.argv[3]), print=None)
"""


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes so far (all their threads)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / os.sysconf("SC_CLK_TCK")


async def raw_copy_mb_per_s(nbytes: int, host: str, cpu: dict | None = None) -> float:
    """Download `nbytes` from another process over loopback into a synced file; the CPU
    seconds both ends spent go into `cpu["raw_copy"]` when given."""
    work = Path(tempfile.mkdtemp(prefix="tidemark-rawcopy-"))
    try:
        src = work / "src"
        with src.open("wb") as f:
            for _ in range(max(1, nbytes >> 20)):
                f.write(os.urandom(1 << 20))
        port = fleet_mod.free_port(host)
        server = subprocess.Popen([sys.executable, "-c", _SERVER, str(src), host, str(port)])
        try:
            async with aiohttp.ClientSession() as session:
                for _ in range(100):  # bounded wait for the server
                    try:
                        async with session.get(f"http://{host}:{port}/blob") as resp:
                            started = time.perf_counter()
                            cpu0 = time.process_time() + cpu_seconds([server.pid])
                            with (work / "dst").open("wb") as out:
                                async for chunk in resp.content.iter_chunked(1 << 20):
                                    out.write(chunk)
                                out.flush()
                                os.fsync(out.fileno())
                            elapsed = time.perf_counter() - started
                            if cpu is not None:
                                used = time.process_time() + cpu_seconds([server.pid]) - cpu0
                                cpu["raw_copy_cpu_s"] = round(used, 2)
                            return src.stat().st_size / elapsed / 1e6
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.1)
                raise RuntimeError("raw-copy server did not start")
        finally:
            server.kill()
            server.wait(timeout=10)
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def _fill(writer: Writer, say: Say) -> int:
    """Write a full image to every page of the volume (4 pages per mini-transaction)."""
    layout = writer.topology.layout
    pages = list(range(layout.page_count))
    written = 0
    sem = asyncio.Semaphore(64)
    started = time.monotonic()

    async def one(batch: list[int]) -> None:
        nonlocal written
        async with sem:
            await writer.commit([Change(p, os.urandom(layout.page_size), full_image=True) for p in batch])
            written += len(batch) * layout.page_size
            if written % (64 << 20) < len(batch) * layout.page_size:
                say(f"  filled {written >> 20} MiB ({written / (time.monotonic() - started) / 1e6:.1f} MB/s)")

    await asyncio.gather(*(one(pages[i : i + 4]) for i in range(0, len(pages), 4)))
    return written


async def _hydrations(topology: Topology, node: str) -> dict[int, dict]:
    url = topology.nodes[node]
    async with topology.session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=5)) as session:
        async with session.get(f"{url}/v1/status") as resp:
            data = await resp.json()
    return {s["pg"]: s.get("hydration") or {} for s in data["segments"]}


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def bench_rebuild(volume_mb: int, say: Say, keep: Path | None = None) -> dict:
    directory = keep or Path(tempfile.mkdtemp(prefix="tidemark-bench-rebuild-"))
    page_size = 4096
    pgs = 6
    pages_per_pg = max(16, (volume_mb << 20) // page_size // pgs)
    # No rebuild bandwidth cap (0): the benchmark measures the rebuild path itself; the
    # cap's enforcement is tested in tests/process/test_node_hydrate.py.
    repair = {"node_loss_timeout": 1.0, "max_concurrent": 6, "bandwidth": 0}
    load_start = _load()
    fleet, topology = await fleet_mod.up(
        directory / "fleet", 3, pgs, pages_per_pg, page_size, "127.0.0.220", repair=repair
    )
    try:
        writer = await Writer.open(topology, membership_source=membership_source(fleet.dir))
        record_volume_epoch(fleet.dir, topology.volume_epoch)
        try:
            say(f"filling a {volume_mb} MiB volume ({pgs} PGs) with full page images")
            await _fill(writer, say)
            lost = "a1"
            before_kill = load_topology(fleet.dir).memberships
            lost_pgs = [pg for pg, m in before_kill.items() if lost in m.members]
            say("baseline: foreground throughput before the fault (10 s)")
            # CPU of the fleet (nodes, supervisor) and of this process (writer, clients):
            # on a shared machine the rebuild's cost in CPU seconds is load-independent.
            pids = [n.pid for n in fleet.nodes.values()] + [int(fleet.options.get("supervisor_pid", 0))]
            t_cpu, c_cpu = time.monotonic(), cpu_seconds(pids) + time.process_time()
            before = await closed_loop(writer, 10, 32, seed=random.randrange(1 << 30))
            base_cpu_rate = (cpu_seconds(pids) + time.process_time() - c_cpu) / (time.monotonic() - t_cpu)
            say(f"  {before['records_per_s']} records/s")
            say(f"kill {lost} (holds {len(lost_pgs)} segments); the supervisor rebuilds them in zone a")
            fleet.kill(lost)
            killed = time.time()
            t_cpu, c_cpu = time.monotonic(), cpu_seconds(pids) + time.process_time()
            stop = asyncio.Event()
            commit_times: list[float] = []
            rng = random.Random(1)
            layout = writer.topology.layout

            async def client() -> None:
                while not stop.is_set():
                    await writer.commit(changes_for_bench(rng, layout.page_count, layout.page_size))
                    commit_times.append(time.time())

            clients = [asyncio.create_task(client()) for _ in range(32)]
            # bounded wait for every repair of the lost segments to finish
            deadline = time.monotonic() + 1800
            done: dict[int, dict] = {}
            while time.monotonic() < deadline and len(done) < len(lost_pgs):
                for h in read_repairs(fleet.dir)["history"]:
                    if h["lost"] == lost:
                        done[h["pg"]] = h
                await asyncio.sleep(0.5)
            window_cpu = cpu_seconds(pids) + time.process_time() - c_cpu
            window_s = time.monotonic() - t_cpu
            stop.set()
            await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
            if len(done) < len(lost_pgs) or any(h["step"] != "done" for h in done.values()):
                raise RuntimeError(f"rebuild incomplete: {json.dumps(list(done.values()))}")
            started = min(h["started"] for h in done.values())
            finished = max(h["finished"] for h in done.values())
            load_during = _load()
            topo = load_topology(fleet.dir)
            rebuilt = 0
            node_side: list[dict] = []
            for pg in lost_pgs:
                (target,) = set(topo.memberships[pg].members) - set(before_kill[pg].members)
                h = (await _hydrations(topo, target)).get(pg, {})
                rebuilt += h.get("bytes", 0)
                node_side.append({"pg": pg, "node": target, "bytes": h.get("bytes", 0),
                                  "seconds": h.get("seconds"), "phase_seconds": h.get("phase_seconds"),
                                  "records": h.get("records"), "refetched": h.get("refetched")})
            in_window = sum(1 for t in commit_times if started <= t <= finished)
            during_rps = in_window * RECORDS_PER_MTR / max(finished - started, 1e-9)
        finally:
            await writer.close()
    finally:
        fleet.down()
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    seconds = finished - started
    rate = rebuilt / max(seconds, 1e-9) / 1e6
    say(f"raw copy of {rebuilt >> 20} MiB between two processes over loopback")
    cpu: dict = {}
    raw = await raw_copy_mb_per_s(rebuilt, "127.0.0.1", cpu)
    return {
        "benchmark": "rebuild",
        "volume_mb": volume_mb,
        "lost_segments": len(lost_pgs),
        "rebuilt_bytes": rebuilt,
        "wait_before_rebuild_s": repair["node_loss_timeout"],
        "bandwidth_cap_bytes_per_s": repair["bandwidth"] or "unlimited",
        "seconds_from_kill_to_done": round(finished - killed, 2),
        "rebuild_seconds": round(seconds, 2),
        "rebuild_mb_per_s": round(rate, 1),
        "baseline_raw_copy_mb_per_s": round(raw, 1),
        "ratio": round(rate / raw, 3),
        "foreground_records_per_s_before": before["records_per_s"],
        "foreground_records_per_s_during": round(during_rps, 1),
        "foreground_ratio": round(during_rps / max(before["records_per_s"], 1e-9), 3),
        "hydrations": node_side,
        # Cores the fleet + writer actually got: on a shared machine this shows how much
        # CPU the run had (2 cores idle; far less when other work competes).
        "cpu": {
            "cores_used_before": round(base_cpu_rate, 2),
            "cores_used_kill_to_done": round(window_cpu / max(window_s, 1e-9), 2),
            "cpu_s_kill_to_done": round(window_cpu, 2),
            "raw_copy_cpu_s": cpu.get("raw_copy_cpu_s"),
        },
        "load_average_1_5_15": {"start": load_start, "after_rebuild": load_during, "end": _load()},
    }
