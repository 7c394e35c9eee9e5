"""The narrated playground demo: faults while a verifying workload runs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from rich.console import Console

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import read_all_pages, run_workload, verify
from tidemark_compute.writer import Writer

from . import fleet as fleet_mod
from .status import converged, fleet_status
from .workdir import fresh_workdir

console = Console(highlight=False, soft_wrap=True)


class Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.commits = 0

    def say(self, text: str) -> None:
        console.print(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim]  {text}")


async def _watch(narrator: Narrator, seconds: float, label: str) -> int:
    """Report commit throughput once a second for `seconds`; returns commits made."""
    start = narrator.commits
    for _ in range(int(seconds)):
        before = narrator.commits
        await asyncio.sleep(1.0)
        narrator.say(f"  {label}: {narrator.commits - before:5d} commits/s")
    return narrator.commits - start


async def run_demo(directory: Path, phase_seconds: float = 4.0) -> bool:
    narrator = Narrator()
    fresh_workdir(directory)
    narrator.say("[bold]Starting a fleet[/bold]: 6 storage nodes in zones a/b/c, 4 protection groups")
    fleet, topology = await fleet_mod.up(directory, nodes_per_zone=2, pgs=4, gossip_interval=0.5)
    try:
        for node in fleet.nodes.values():
            narrator.say(f"  node {node.name} zone {node.zone} at {node.url} (pid {node.pid})")
        for pg, m in sorted(topology.memberships.items()):
            narrator.say(f"  pg {pg}: segments on {', '.join(m.members)}")
        writer = await Writer.open(topology, membership_source=membership_source(directory))
        record_volume_epoch(directory, topology.volume_epoch)
        narrator.say(f"Writer open: volume epoch {topology.volume_epoch}, VDL {writer.vdl}")
        model = Model(directory / "workload.log")
        stop = asyncio.Event()

        def counted(_latency: float) -> None:
            narrator.commits += 1

        work = asyncio.create_task(
            run_workload(writer, model, 3600, concurrency=16, stop=stop, on_commit=counted)
        )
        try:
            ok = await _scenario(narrator, fleet, writer, phase_seconds)
        finally:
            stop.set()
        stats = await work
        narrator.say(f"Workload stopped: {stats.acked} commits acknowledged, p99 {stats.percentile(0.99):.1f} ms")
        narrator.say("Waiting for gossip to bring every segment to the same SCL ...")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = await fleet_status(fleet, load_topology(directory))
            if converged(status):
                break
            await asyncio.sleep(0.5)
        for pg in status["pgs"]:
            narrator.say(f"  pg {pg['id']}: {pg['complete_segments']}/6 segments complete, SCLs {sorted(set(pg['scl'].values()))}")
        result = await verify(writer, model)
        model.close()
        await writer.close()
        verdict = "[green]zero acknowledged commits lost[/green]" if result.ok else "[red]VERIFICATION FAILED[/red]"
        narrator.say(
            f"Verification: {result.acked} acked commits, {result.checked_slots} slots checked, "
            f"lost {len(result.lost)}, partial {len(result.partial)}, corrupt {len(result.corrupt)}: {verdict}"
        )
        for line in (result.lost + result.partial + result.corrupt)[:5]:
            narrator.say(f"  {line}")
        return ok and result.ok and converged(status)
    finally:
        narrator.say("Tearing the fleet down")
        fleet.down()


async def _scenario(narrator: Narrator, fleet: fleet_mod.Fleet, writer: Writer, phase: float) -> bool:
    ok = True
    await _watch(narrator, phase, "healthy fleet")
    narrator.say("[bold yellow]Kill node a1[/bold yellow] (SIGKILL): 5 of 6 segments left, writes need 4")
    fleet.kill("a1")
    ok &= await _watch(narrator, phase, "one node down") > 0
    narrator.say("[bold yellow]Kill node a2[/bold yellow]: the whole of zone a is down")
    fleet.kill("a2")
    ok &= await _watch(narrator, phase, "zone a down") > 0
    narrator.say("[bold red]Kill node b1[/bold red]: zone a + 1 more node down: 3 of 6 left, writes must wait")
    fleet.kill("b1")
    stalled = await _watch(narrator, phase, "zone+1 down")
    narrator.say(f"  writes made during zone+1 outage: {stalled} (only commits already in flight when b1 died; no write quorum after)")
    pages = list(range(0, writer.topology.layout.page_count, 7))
    started = time.monotonic()
    read = await read_all_pages(writer, pages, timeout=30)
    narrator.say(f"  reads go on: {len(read)} pages read at VDL {writer.vdl} in {time.monotonic() - started:.2f}s from the 3 survivors")
    narrator.say("[bold green]Restart a1, a2, b1[/bold green] with their data: writes resume, gossip fills their holes")
    for name in ("a1", "a2", "b1"):
        fleet.spawn(fleet.nodes[name])
    await fleet_mod.wait_ready([fleet.nodes[n] for n in ("a1", "a2", "b1")])
    ok &= await _watch(narrator, phase, "all restarted") > 0
    return ok
