"""`tidemark chaos EXPERIMENT`: scripted faults against a verifying workload.

Each experiment starts a fresh fleet (3 nodes per zone, automatic repair), runs the
workload throughout, injects its faults, waits for the fleet to heal, verifies every
acknowledged commit, prints a timeline and optionally plots throughput and commit
latency over time with the faults and the repairs marked.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import click
from rich.console import Console

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import read_all_pages, run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_protocol.node_auth import Role

from . import fleet as fleet_mod
from .status import converged, fleet_status
from .supervisor import read_repairs
from .workdir import WORKLOAD_LOG, fresh_workdir

console = Console(highlight=False, soft_wrap=True)  # stderr with --json: stdout is the summary


@dataclass
class Run:
    fleet: fleet_mod.Fleet
    writer: Writer
    model: Model
    t0: float = field(default_factory=time.time)
    events: list[tuple[float, str, str]] = field(default_factory=list)  # (t, kind, text)
    commits: list[tuple[float, float]] = field(default_factory=list)  # (t, latency ms)
    workload: asyncio.Task | None = None
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.time() - self.t0

    def event(self, kind: str, text: str) -> None:
        self.events.append((self.now(), kind, text))
        console.print(f"[dim]{self.now():6.1f}s[/dim]  [{'red' if kind == 'fault' else 'cyan'}]{text}[/]")

    def start_workload(self) -> None:
        self.stop = asyncio.Event()

        def on_commit(latency: float) -> None:
            self.commits.append((self.now(), latency))

        self.workload = asyncio.create_task(
            run_workload(self.writer, self.model, 3600, concurrency=8, stop=self.stop,
                         on_commit=on_commit, seed=random.randrange(1 << 30))
        )  # fmt: skip

    async def stop_workload(self) -> None:
        self.stop.set()
        if self.workload is not None:
            await self.workload

    async def watch(self, seconds: float) -> None:
        for _ in range(int(seconds * 2)):
            await asyncio.sleep(0.5)
        recent = sum(1 for t, _ in self.commits if t > self.now() - seconds)
        console.print(f"[dim]{self.now():6.1f}s[/dim]    {recent / seconds:7.0f} commits/s over the last {seconds:.0f}s")


async def _wait_healed(run: Run, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        topology = load_topology(run.fleet.dir)
        status = await fleet_status(run.fleet, topology)
        repairs = read_repairs(run.fleet.dir)
        settled = not repairs["in_progress"] and all(p["epoch"] and not p["next_members"] for p in status["pgs"])
        if settled and converged(status):
            return True
        await asyncio.sleep(0.5)
    return False


# -- experiments ----------------------------------------------------------------------
async def kill_node(run: Run) -> None:
    run.event("fault", "kill node a1 (SIGKILL); its segments get rebuilt in zone a")
    run.fleet.kill("a1")
    await run.watch(4)
    await _wait_for_repairs(run, 120)


async def kill_zone(run: Run) -> None:
    run.event("fault", "kill zone b (b1, b2, b3): writes go on with 4/6")
    for name in ("b1", "b2", "b3"):
        run.fleet.kill(name)
    await run.watch(5)
    run.event("recover", "zone b returns")
    for name in ("b1", "b2", "b3"):
        run.fleet.spawn(run.fleet.nodes[name])
    await fleet_mod.wait_ready([run.fleet.nodes[n] for n in ("b1", "b2", "b3")])
    await run.watch(3)


async def zone_plus_one(run: Run) -> None:
    run.event("fault", "kill zone c and node a2: 3 of 6 left for most PGs; writes wait, reads go on")
    for name in ("c1", "c2", "c3", "a2"):
        run.fleet.kill(name)
    await run.watch(4)
    pages = run.model.pages()[:50]
    started = time.monotonic()
    await read_all_pages(run.writer, pages, timeout=30)
    run.event("info", f"read {len(pages)} pages at VDL {run.writer.vdl} in {time.monotonic() - started:.2f}s")
    run.event("recover", "a2 and zone c return: writes resume")
    for name in ("c1", "c2", "c3", "a2"):
        run.fleet.spawn(run.fleet.nodes[name])
    await fleet_mod.wait_ready([run.fleet.nodes[n] for n in ("c1", "c2", "c3", "a2")])
    await run.watch(3)


async def pause_node(run: Run) -> None:
    run.event("fault", "pause node b2 (SIGSTOP)")
    run.fleet.pause("b2")
    await run.watch(4)
    run.event("recover", "resume b2: it catches up by gossip")
    run.fleet.resume("b2")
    await run.watch(3)


async def corrupt(run: Run) -> None:
    """Flip bytes of stored records on one node (a named fake of disk corruption: the
    node's debug endpoint damages its own RocksDB values); the scrubber must repair."""
    topology = load_topology(run.fleet.dir)
    url = topology.nodes["c1"]
    damaged = 0
    async with topology.session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=5)) as session:
        for pg in topology.pgs_of("c1"):
            async with session.get(f"{url}/v1/segments/{pg}/report") as resp:
                lsns = [r[0] for r in (await resp.json())["records"]]
            for lsn in random.sample(lsns, min(5, len(lsns))):
                async with session.post(
                    f"{url}/v1/debug/segments/{pg}/fake-disk-corruption", params={"lsn": str(lsn)}
                ) as resp:
                    damaged += resp.status < 300
    run.event("fault", f"corrupt {damaged} stored records on c1 (fake disk corruption)")
    await run.watch(3)
    deadline = time.monotonic() + 60
    counters: dict = {}
    async with topology.session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.monotonic() < deadline:
            async with session.get(f"{url}/v1/status") as resp:
                counters = await resp.json()
            if counters.get("corruptions_repaired", 0) >= damaged:
                break
            await asyncio.sleep(0.5)
    detected, repaired = counters.get("corruptions_detected", 0), counters.get("corruptions_repaired", 0)
    run.event("recover", f"scrubber on c1: {detected} corruptions detected, {repaired} repaired from peers")
    if repaired < damaged:
        raise RuntimeError(f"only {repaired} of {damaged} corruptions repaired")


async def restart_writer(run: Run) -> None:
    run.event("fault", "the writer crashes (in-flight commits in doubt) and a new one recovers")
    run.stop.set()
    await run.writer.close()
    if run.workload is not None:
        await run.workload
    started = time.monotonic()
    topology = load_topology(run.fleet.dir)
    run.writer = await Writer.open(topology, membership_source=membership_source(run.fleet.dir))
    record_volume_epoch(run.fleet.dir, topology.volume_epoch)
    run.event("recover", f"new writer at epoch {topology.volume_epoch}, VDL {run.writer.vdl}, "
                         f"recovered in {time.monotonic() - started:.2f}s")  # fmt: skip
    run.start_workload()
    await run.watch(3)


async def _wait_for_repairs(run: Run, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen: set[tuple[int, str]] = set()
    while time.monotonic() < deadline:
        repairs = read_repairs(run.fleet.dir)
        for r in repairs["in_progress"]:
            if (r["pg"], "start") not in seen:
                seen.add((r["pg"], "start"))
                run.event("repair", f"repair pg {r['pg']}: {r['lost']} -> {r['target']} started")
        for r in repairs["history"]:
            if (r["pg"], "end") not in seen:
                seen.add((r["pg"], "end"))
                run.event("repair", f"repair pg {r['pg']}: {r['step']} {r.get('error') or ''}".strip())
        if repairs["history"] and not repairs["in_progress"]:
            return
        await asyncio.sleep(0.5)


# Experiments that need the nodes' fault-injection endpoints (`--enable-fault-injection`).
FAULT_INJECTING = frozenset({"corrupt"})

EXPERIMENTS: dict[str, Callable[[Run], Awaitable[None]]] = {
    "kill-node": kill_node,
    "kill-zone": kill_zone,
    "zone-plus-one": zone_plus_one,
    "pause-node": pause_node,
    "corrupt": corrupt,
    "restart-writer": restart_writer,
}


async def run_experiment(name: str, directory: Path, plot: Path | None, base_ip: str) -> dict:
    """The experiment on a fresh fleet in DIRECTORY; its summary (`ok`: healed, nothing lost)."""
    fleet_mod.check_options(3, 4, 64, 4096, base_ip)  # before the work dir is made
    fresh_workdir(directory)
    repair = {"node_loss_timeout": 2.0, "max_concurrent": 4, "bandwidth": 0}
    fleet, topology = await fleet_mod.up(
        directory, 3, 4, 64, 4096, base_ip, gossip_interval=0.5, repair=repair, scrub_interval=1.0,
        fault_injection=name in FAULT_INJECTING,  # only the corrupt experiment damages data
    )
    try:
        writer = await Writer.open(topology, membership_source=membership_source(directory))
        record_volume_epoch(directory, topology.volume_epoch)
        run = Run(fleet, writer, Model(directory / WORKLOAD_LOG))
        run.event("info", f"fleet up: 9 nodes in zones a/b/c, 4 PGs; writer epoch {topology.volume_epoch}")
        run.start_workload()
        await run.watch(3)
        await EXPERIMENTS[name](run)
        await run.stop_workload()
        run.event("info", "workload stopped; waiting for the fleet to heal")
        healed = await _wait_healed(run, 120)
        run.event("info", "fleet healed: every PG 6/6 complete" if healed else "fleet did NOT heal in time")
        result = await verify(run.writer, run.model, timeout=60)
        await run.writer.close()
        run.model.close()
        ok = healed and result.ok
        verdict = "zero acknowledged commits lost" if result.ok else f"FAILED: {result.to_json()}"
        run.event("info", f"verification: {result.acked} acked, {result.in_doubt} in doubt, {verdict}")
        for r in read_repairs(directory)["history"]:
            run.events.append((r["started"] - run.t0, "repair", f"pg {r['pg']} start"))
            if r.get("finished"):
                run.events.append((r["finished"] - run.t0, "repair-done", f"pg {r['pg']} done"))
        if plot is not None:
            plot_run(run, name, plot)
            console.print(f"plot written to {plot}")
        return summary(name, ok, healed, result.to_json(), run.events, plot)
    finally:
        fleet.down()


def summary(name: str, ok: bool, healed: bool, verified: dict, events: list[tuple[float, str, str]],
            plot: Path | None) -> dict:
    """What `tidemark chaos --json` prints (snake_case keys, seconds from the start)."""
    return {"experiment": name, "ok": ok, "healed": healed, **verified,
            "events": [{"t_s": round(t, 2), "kind": kind, "text": text} for t, kind, text in sorted(events)],
            "plot": str(plot) if plot else None}


def plot_run(run: Run, name: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bucket = 0.5
    end = max([t for t, _ in run.commits] + [1.0])
    n = int(end / bucket)  # whole buckets only: a partial last one would look like a drop
    counts = [0] * n
    lat: list[list[float]] = [[] for _ in range(n)]
    for t, latency in run.commits:
        i = int(t / bucket)
        if i >= n:
            continue
        counts[i] += 1
        lat[i].append(latency)
    xs = [i * bucket for i in range(n)]
    p99 = [sorted(v)[int(0.99 * (len(v) - 1))] if v else float("nan") for v in lat]
    fig, (ax1, ax2) = plt.subplots(2, 1, sharex=True, figsize=(11, 6))
    ax1.plot(xs, [c / bucket for c in counts], color="tab:blue")
    ax1.set_ylabel("commits/s")
    ax2.plot(xs, p99, color="tab:purple")
    ax2.set_ylabel("p99 commit latency (ms)")
    ax2.set_xlabel("seconds")
    colors = {"fault": "red", "recover": "green", "repair": "orange", "repair-done": "darkgreen", "info": "gray"}
    for t, kind, text in run.events:
        for ax in (ax1, ax2):
            ax.axvline(t, color=colors.get(kind, "gray"), linestyle="--", linewidth=0.8)
        if kind in ("fault", "recover"):
            ax1.annotate(text[:40], (t, ax1.get_ylim()[1] * 0.95), fontsize=7, rotation=90, va="top")
    fig.suptitle(f"tidemark chaos {name}: red = fault, green = recovery, orange/dark green = repair start/end")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@click.command()
@click.argument("experiment", type=click.Choice(sorted(EXPERIMENTS)))
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".tidemark-chaos"), show_default=True)
@click.option("--plot", type=click.Path(path_type=Path), default=None, help="write a PNG timeline here")
@click.option("--base-ip", default="127.0.0.60", show_default=True, help="first node address (9 nodes)")
@click.option("--json", "as_json", is_flag=True,
              help="progress on stderr, a summary on stdout (ok, healed, acked, lost, events, ...)")
def chaos(experiment: str, directory: Path, plot: Path | None, base_ip: str, as_json: bool = False) -> None:
    """Run a scripted fault EXPERIMENT against a fresh fleet with a verifying workload.
    DIR must be absent, empty, or left by an earlier chaos/demo run (nothing else in it).

    Exit status 0 when the fleet healed and no acknowledged commit was lost, else 1."""
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        # Checked before the run, not after minutes of it; the plot extra keeps images small.
        raise click.ClickException("--plot needs matplotlib: pip install 'tidemark[plot]'")
    console.stderr = as_json  # the current sys.stderr (or stdout), looked up on each print
    result = asyncio.run(run_experiment(experiment, directory, plot, base_ip))
    if as_json:
        click.echo(json.dumps(result))
    raise SystemExit(0 if result["ok"] else 1)
