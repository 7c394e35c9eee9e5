"""Figures for docs/benchmarks.md (not a test): open-loop commit latency at a fixed rate
against a fresh 6-node playground fleet (2 s closed-loop warm-up first), with the GC
pauses of this process (the writer's). The "no materialization" row of the table was
taken with nodes started with `--materialize-interval 3600 --materialize-min-batch
1000000000`.

    .venv/bin/python tests/process/measure_open_loop.py [--rate 2600] [--seconds 10] [--base-ip 127.0.161.10]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import tempfile
import time
from pathlib import Path

from tidemark_compute import bench_write as bw
from tidemark_compute.topology import record_volume_epoch
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod

pauses: list[tuple[int, float]] = []
_started: list[float] = []


def _gc_callback(phase: str, info: dict) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        pauses.append((info["generation"], (time.perf_counter() - _started[0]) * 1000))


async def main(rate: float, seconds: float, base_ip: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix="tidemark-open-loop-"))
    fleet, topology = await fleet_mod.up(work / "fleet", 2, 4, 256, 4096, base_ip)
    try:
        writer = await Writer.open(topology)
        record_volume_epoch(work / "fleet", topology.volume_epoch)
        try:
            await bw.closed_loop(writer, 2.0, 128)
            gc.callbacks.append(_gc_callback)
            out = await bw.open_loop(writer, seconds, rate)
        finally:
            await writer.close()
    finally:
        fleet.down()
        shutil.rmtree(work, ignore_errors=True)
    full = sorted(ms for generation, ms in pauses if generation == 2)
    return {**out, "writer_gen2_collections": len(full), "writer_gen2_max_ms": round(max(full, default=0.0), 1)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=2600.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--base-ip", default="127.0.161.10")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.rate, args.seconds, args.base_ip))))
