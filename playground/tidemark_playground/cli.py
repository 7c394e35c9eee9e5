"""`tidemark playground`: a local fleet on loopback, faults, status and the demo."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tidemark_compute.topology import load_topology
from tidemark_protocol.repair import RepairLimits

from . import fleet as fleet_mod
from .demo import run_demo
from .status import fleet_status
from .supervisor import Supervisor, read_repairs

DIR_OPTION = click.option(
    "--dir", "directory", type=click.Path(path_type=Path),
    default=Path(".tidemark-playground"), show_default=True,
)  # fmt: skip


@click.group()
def playground() -> None:
    """A local storage fleet: processes on 127.0.0.x addresses in zones a/b/c."""


@playground.command()
@DIR_OPTION
@click.option("--nodes-per-zone", type=int, default=2, show_default=True)
@click.option("--pgs", type=int, default=4, show_default=True)
@click.option("--pages-per-pg", type=int, default=64, show_default=True)
@click.option("--page-size", type=int, default=4096, show_default=True)
@click.option("--base-ip", default="127.0.0.10", show_default=True, help="first node address")
@click.option("--backup", default=None,
              help="continuous backup target for every node: s3://bucket/prefix or file:///path")
@click.option("--repair/--no-repair", default=True, show_default=True, help="rebuild lost segments automatically")
@click.option("--node-loss-timeout", type=float, default=30.0, show_default=True, help="seconds a node may be down before its segments are rebuilt")
@click.option("--max-concurrent-rebuilds", type=int, default=4, show_default=True)
@click.option("--rebuild-bandwidth", type=int, default=0, show_default=True, help="bytes/s per rebuild, 0 = unlimited")
@click.option("--json", "as_json", is_flag=True)
def up(
    directory: Path, nodes_per_zone: int, pgs: int, pages_per_pg: int, page_size: int, base_ip: str,
    repair: bool, node_loss_timeout: float, max_concurrent_rebuilds: int, rebuild_bandwidth: int, as_json: bool,
    backup: str | None = None,
) -> None:  # fmt: skip
    """Start a fleet; returns when every node is ready and segments exist."""
    repair_options = (
        {"node_loss_timeout": node_loss_timeout, "max_concurrent": max_concurrent_rebuilds, "bandwidth": rebuild_bandwidth}
        if repair
        else None
    )
    fleet, topology = asyncio.run(
        fleet_mod.up(directory, nodes_per_zone, pgs, pages_per_pg, page_size, base_ip, repair=repair_options,
                     backup=backup)
    )
    status = asyncio.run(fleet_status(fleet, topology))
    _print_status(status, as_json)


@playground.command()
@DIR_OPTION
@click.option("--json", "as_json", is_flag=True)
def status(directory: Path, as_json: bool) -> None:
    """Nodes, their segments, and each PG's healthy segments."""
    fleet = fleet_mod.Fleet.load(directory)
    status = asyncio.run(fleet_status(fleet, load_topology(directory)))
    status["repairs"] = read_repairs(directory)
    _print_status(status, as_json)


def _print_status(status: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(status))
        return
    console = Console()
    nodes = Table("node", "zone", "address", "process", "alive", "segments (pg:scl)")
    for n in status["nodes"]:
        segs = " ".join(f"{s['pg']}:{s['scl']}" for s in n["segments"])
        nodes.add_row(n["name"], n["zone"], n["address"], n["process"], str(n["alive"]), segs)
    console.print(nodes)
    pgs = Table("pg", "epoch", "members", "healthy", "complete")
    for p in status["pgs"]:
        pgs.add_row(str(p["id"]), str(p["epoch"]), ",".join(p["members"]), f"{p['healthy_segments']}/6", f"{p['complete_segments']}/6")
    console.print(pgs)
    repairs = status.get("repairs") or {}
    for r in repairs.get("in_progress", []):
        console.print(f"repair pg {r['pg']}: {r['lost']} -> {r['target']} {r['step']} {r['pct']}%")
    for w in repairs.get("waiting", []):
        console.print(f"waiting pg {w['pg']} ({w['lost']}): {w['reason']}")


def _fault(action: str, doc: str) -> click.Command:
    @click.command(name=action, help=doc)
    @click.argument("node")
    @DIR_OPTION
    def command(node: str, directory: Path) -> None:
        fleet = fleet_mod.Fleet.load(directory)
        if node not in fleet.nodes:
            raise click.BadParameter(f"unknown node {node!r}; nodes: {', '.join(fleet.nodes)}")
        getattr(fleet, action)(node)
        if action == "restart":
            asyncio.run(fleet_mod.wait_ready([fleet.nodes[node]]))
        click.echo(f"{action} {node}: process {fleet.state(node)}")

    return command


for _action, _doc in (
    ("kill", "SIGKILL a node's process (its data stays)."),
    ("pause", "SIGSTOP a node."),
    ("resume", "SIGCONT a paused node."),
    ("restart", "Kill a node if running and start it again on its data."),
):
    playground.add_command(_fault(_action, _doc))


@playground.command()
@DIR_OPTION
@click.option("--purge", is_flag=True, help="also delete the playground directory")
def down(directory: Path, purge: bool) -> None:
    """Stop every node of the fleet."""
    fleet = fleet_mod.Fleet.load(directory)
    fleet.down()
    if purge:
        shutil.rmtree(directory)
    click.echo(f"fleet in {directory} stopped")


@playground.command()
@DIR_OPTION
@click.option("--phase-seconds", type=float, default=4.0, show_default=True)
def demo(directory: Path, phase_seconds: float) -> None:
    """Fleet up, workload, node/zone/zone+1 faults, restart, catch-up, verify, teardown."""
    ok = asyncio.run(run_demo(directory, phase_seconds))
    raise SystemExit(0 if ok else 1)


@playground.command()
@DIR_OPTION
@click.option("--node-loss-timeout", type=float, default=30.0, show_default=True)
@click.option("--max-concurrent", type=int, default=4, show_default=True)
@click.option("--bandwidth", type=int, default=0, show_default=True)
def supervise(directory: Path, node_loss_timeout: float, max_concurrent: int, bandwidth: int) -> None:
    """Run the repair loop in the foreground (`up` starts it in the background)."""
    limits = RepairLimits(
        node_loss_timeout=node_loss_timeout, max_concurrent=max_concurrent, bandwidth_bytes_per_s=bandwidth
    )
    asyncio.run(Supervisor(directory, limits).run_forever())
