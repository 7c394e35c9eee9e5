"""`tidemark bench backup`: what continuous backup costs the foreground, and how fast a
restore is against a raw parallel download of the same objects (same run, same MinIO).
The restore is timed end to end: bucket -> a new fleet a writer has opened."""

from __future__ import annotations

import asyncio
import os
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from rich.console import Console

from tidemark_backup import images
from tidemark_backup.catalog import catalog
from tidemark_backup.objstore import open_store
from tidemark_compute import bench_write as bw
from tidemark_compute.writer import Writer
from tidemark_protocol.writer_core import Change
from tidemark_restore.install import restore_into
from tidemark_restore.inventory import load_inventory, rebuild_volume

from . import fleet as fleet_mod

console = Console(stderr=True, highlight=False)


async def _fill(writer: Writer, pages: int, page_size: int, concurrency: int = 32, per_commit: int = 8) -> float:
    t0 = time.monotonic()
    sem = asyncio.Semaphore(concurrency)

    async def one(first: int) -> None:
        async with sem:
            changes = [Change(p, os.urandom(64) * (page_size // 64), full_image=True)
                       for p in range(first, min(first + per_commit, pages))]
            await writer.commit(changes)

    await asyncio.gather(*(one(p) for p in range(0, pages, per_commit)))
    return time.monotonic() - t0


async def run(bucket_url: str, seconds: float, concurrency: int, volume_mb: int, directory: Path,
              rounds: int = 3, backup_interval: float = 2.0) -> dict:
    """BUCKET_URL (s3://bucket) is an empty bucket whose endpoint and credentials are in
    the environment (the nodes inherit them); the fleets live under DIRECTORY."""
    url = f"{bucket_url}/vol"
    fleets = []
    try:
        ratio = paired = None
        rates: dict[str, list[float]] = {"off": [], "on": []}
        if rounds:  # --rounds 0: the restore measurement only
            # -- foreground cost: the same workload on a fleet without and with backup ----
            off, topo_off = await fleet_mod.up(directory / "off", 2, 4, 256, 4096, "127.0.0.140")
            fleets.append(off)
            on, topo_on = await fleet_mod.up(directory / "on", 2, 4, 256, 4096, "127.0.0.150", backup=url,
                                             backup_options={"backup_interval": backup_interval,
                                                             "backup_snapshot_interval": 10.0})
            fleets.append(on)
            w_off, w_on = await Writer.open(topo_off), await Writer.open(topo_on)
            try:
                await bw.closed_loop(w_off, 1.0, concurrency)
                await bw.closed_loop(w_on, 1.0, concurrency)
                for rnd in range(rounds):
                    for name, w in (("off", w_off), ("on", w_on)) if rnd % 2 == 0 else (("on", w_on), ("off", w_off)):
                        res = await bw.closed_loop(w, seconds, concurrency)
                        rates[name].append(res["commits_per_s"])
                        console.print(f"  backup {name}: {res['commits_per_s']} commits/s p99 {res['p99_ms']} ms")
            finally:
                await w_off.close()
                await w_on.close()
            off.down()
            on.down()
            fleets.clear()
            ratio = statistics.mean(rates["on"]) / max(statistics.mean(rates["off"]), 1e-9)
            # Adjacent on/off runs share the machine's load at that moment: their ratios are
            # less noisy than the means on a shared CPU.
            paired = statistics.median(a / max(b, 1e-9) for a, b in zip(rates["on"], rates["off"], strict=True))

        # -- restore vs raw download --------------------------------------------------
        pages_per_pg = max(16, volume_mb * 256 // 4)
        url2 = f"{bucket_url}/restore"
        src, topo = await fleet_mod.up(directory / "src", 2, 4, pages_per_pg, 4096, "127.0.0.160",
                                       backup=url2, backup_options={"backup_interval": 1.0,
                                                                    "backup_snapshot_interval": 5.0})
        fleets.append(src)
        w = await Writer.open(topo)
        try:
            fill_s = await _fill(w, 4 * pages_per_pg, 4096)
            console.print(f"  filled {volume_mb} MB in {fill_s:.1f}s")
            final_vdl = w.vdl
        finally:
            await w.close()
        store = open_store(url2)
        deadline = time.monotonic() + 300
        while True:  # until the backup covers the whole fill
            inv = load_inventory(store)
            if any(hi >= final_vdl for _lo, hi in inv.intervals()):
                break
            if time.monotonic() > deadline:
                raise TimeoutError("backup did not catch up with the fill in time")
            await asyncio.sleep(1.0)
        await asyncio.sleep(12.0)  # two snapshot intervals: the fill's last pages get a snapshot
        src.down()
        fleets.clear()
        inv = load_inventory(store)
        _first, latest = inv.window()
        target = inv.lsn_for(latest)
        chain_objs = []
        by_key = {o.key: o for o in inv.objs}
        for _pg, cat in catalog(inv.objs).items():
            base, used = cat.chain(target)
            chosen = [s for s in cat.snaps if s.start == base][:1]
            # An incremental image is read with the extents it lists.
            parts = [by_key[k] for s in chosen if s.kind == "image" for k in images.image_refs(store, s)]
            chain_objs += chosen + parts + used
        nbytes = sum(o.size for o in chain_objs)
        with ThreadPoolExecutor(16) as pool:  # warm-up: every timed read below hits a warm store
            list(pool.map(lambda o: store.get(o.key), chain_objs))
        t0 = time.monotonic()
        with ThreadPoolExecutor(16) as pool:
            got = sum(len(b) for b in pool.map(lambda o: store.get(o.key), chain_objs))
        raw_s = time.monotonic() - t0
        t0 = time.monotonic()
        pages = rebuild_volume(store, inv, target, workers=16)
        rebuild_s = time.monotonic() - t0
        n_pages = len(pages)
        del pages
        console.print(f"  raw download {got / 1e6:.1f} MB in {raw_s:.2f}s; rebuild only {n_pages} pages "
                      f"in {rebuild_s:.2f}s")
        # End to end: a new empty fleet with the same layout, restore_into it (inventory,
        # rebuild, install on every member, a writer opening the volume).
        dst, topo_dst = await fleet_mod.up(directory / "dst", 2, 4, pages_per_pg, 4096, "127.0.0.170")
        fleets.append(dst)
        t0 = time.monotonic()
        restored = await asyncio.to_thread(restore_into, store, latest, topo_dst)
        restore_s = time.monotonic() - t0
        console.print(f"  restore end to end: {restored['pages']} pages in {restore_s:.2f}s "
                      f"(installed at {restored['install_s']}s)")
        w = await Writer.open(topo_dst)  # the restored volume reads back (a sample)
        try:
            for page in sorted(pages_sample := random.Random(1).sample(range(4 * pages_per_pg), 32)):
                await w.read_page(page, w.vdl)
        finally:
            await w.close()
        dst.down()
        fleets.clear()
        return {
            "benchmark": "backup",
            "seconds": seconds,
            "concurrency": concurrency,
            "commits_per_s_backup_off": rates["off"],
            "commits_per_s_backup_on": rates["on"],
            "backup_interval_s": backup_interval,
            "foreground_ratio": round(ratio, 3) if ratio is not None else None,
            "foreground_ratio_paired_median": round(paired, 3) if paired is not None else None,
            "volume_mb": volume_mb,
            "restore_objects": len(chain_objs),
            "restore_bytes": nbytes,
            "raw_download_s": round(raw_s, 3),
            "restore_rebuild_only_s": round(rebuild_s, 3),
            "rebuild_only_ratio": round(raw_s / max(rebuild_s, 1e-9), 3),
            "restore_end_to_end_s": round(restore_s, 3),
            "restore_install_s": restored["install_s"],
            "restore_ratio": round(raw_s / max(restore_s, 1e-9), 3),
            "restored_pages": restored["pages"],
            "rebuilt_pages": n_pages,
            "restored_sample_read": len(pages_sample),
            "fill_s": round(fill_s, 2),
        }
    finally:
        for f in fleets:
            f.down()
