"""`tidemark playground`: a local fleet on loopback (storage nodes and the database
writer instance), faults, status and the demo."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from tidemark_compute.topology import load_topology
from tidemark_protocol.repair import RepairLimits
from tidemark_restore.cli import one_line_errors

from . import fleet as fleet_mod
from .backup_keys import key_options
from .demo import run_demo
from .status import fleet_status, problems
from .supervisor import Supervisor, read_repairs

DIR_OPTION = click.option(
    "--dir", "directory", type=click.Path(path_type=Path),
    default=Path(".tidemark-playground"), show_default=True, help="the fleet's directory",
)  # fmt: skip
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="machine-readable output (snake_case keys)")

# What a user can fix beyond UserError (a bad option, no fleet in --dir, a work dir we did
# not make) and OSError: a process that would not start. One line and exit 1, a JSON
# {"error": …} object with --json (tidemark_cli.errors reports them all).
USER_ERRORS = (RuntimeError,)


user_errors = one_line_errors(USER_ERRORS)


@click.group()
def playground() -> None:
    """A local storage fleet: processes on 127.0.0.x addresses in zones a/b/c, and a
    database writer instance (PostgreSQL wire protocol) over it."""


@playground.command()
@DIR_OPTION
@click.option("--nodes-per-zone", type=int, default=2, show_default=True)
@click.option("--pgs", type=int, default=4, show_default=True)
@click.option("--pages-per-pg", type=int, default=64, show_default=True)
@click.option("--page-size", type=int, default=4096, show_default=True)
@click.option("--base-ip", default="127.0.0.10", show_default=True, help="first node address")
@click.option("--backup", default=None,
              help="continuous backup target for every node: s3://bucket/prefix or file:///path")
@click.option("--backup-key-file", "backup_key_files", multiple=True,
              type=click.Path(path_type=Path, exists=True, dir_okay=False),
              help="encrypt the backup with this key (repeatable: the first encrypts, all decrypt); "
                   "default: a key generated into DIR/backup.key")
@click.option("--backup-encryption/--no-backup-encryption", default=True, show_default=True,
              help="with --backup and no --backup-key-file: generate DIR/backup.key (on) or upload "
                   "unencrypted objects (off)")
@click.option("--repair/--no-repair", default=True, show_default=True, help="rebuild lost segments automatically")
@click.option("--node-loss-timeout", type=float, default=30.0, show_default=True, help="seconds a node may be down before its segments are rebuilt")
@click.option("--max-concurrent-rebuilds", type=int, default=4, show_default=True)
@click.option("--rebuild-bandwidth", type=int, default=0, show_default=True, help="bytes/s per rebuild, 0 = unlimited")
@click.option("--instances", type=int, default=None,
              help="database instances: the writer w1 and N-1 read replicas r1.. (default 2 for a new "
                   "fleet: a writer and a replica), 0 = storage only. An existing fleet keeps what it "
                   "has unless asked for more.")
@click.option("--password-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="the instances' credentials (lines of user:password); default: a password generated "
                   "into DIR/instance-credentials (mode 0600), shown once")
@JSON_OPTION
@user_errors
def up(
    directory: Path, nodes_per_zone: int, pgs: int, pages_per_pg: int, page_size: int, base_ip: str,
    repair: bool, node_loss_timeout: float, max_concurrent_rebuilds: int, rebuild_bandwidth: int, as_json: bool,
    backup: str | None = None, instances: int | None = None, password_file: Path | None = None,
    backup_key_files: tuple[Path, ...] = (), backup_encryption: bool = True,
) -> None:  # fmt: skip
    """Start a fleet; returns when every node is ready, segments exist and the database
    instance answers. Every option is checked before anything starts; if starting fails,
    what this call started is stopped again."""
    if instances is None and not (directory / fleet_mod.FLEET_FILE).exists():
        instances = 2
    repair_options = (
        {"node_loss_timeout": node_loss_timeout, "max_concurrent": max_concurrent_rebuilds, "bandwidth": rebuild_bandwidth}
        if repair
        else None
    )
    backup_options = None
    if backup and not (directory / fleet_mod.FLEET_FILE).exists():
        fleet_mod.check_options(nodes_per_zone, pgs, pages_per_pg, page_size, base_ip, instances,
                                password_file, repair_options, backup)  # before a key file is made
        backup_options = key_options(directory, backup_key_files, backup_encryption)
    fleet, topology = asyncio.run(
        fleet_mod.up(directory, nodes_per_zone, pgs, pages_per_pg, page_size, base_ip, repair=repair_options,
                     backup=backup, backup_options=backup_options, instances=instances,
                     password_file=password_file)
    )
    status = asyncio.run(fleet_status(fleet, topology))
    _print_status(status, as_json)
    if fleet.new_password and not as_json:  # once, here only: never logged, never in --json
        inst = next(iter(fleet.instances.values()))
        click.echo(f"password for {inst.user} (shown once; kept in {inst.password_file}): {fleet.new_password}")


@playground.command()
@DIR_OPTION
@JSON_OPTION
@user_errors
def status(directory: Path, as_json: bool) -> None:
    """Nodes, their segments, each PG's healthy segments and the database instances.

    Exit status: 0 when the fleet is healthy; 1 when it is degraded (a node or an instance
    down, or a PG with fewer than 6 healthy segments: the status is printed all the same,
    with `healthy` false and the `problems` listed) or when DIR holds no fleet."""
    fleet = fleet_mod.Fleet.load(directory)
    status = asyncio.run(fleet_status(fleet, load_topology(directory)))
    status["repairs"] = read_repairs(directory)
    found = problems(status)
    status["healthy"], status["problems"] = not found, found
    _print_status(status, as_json)
    if not as_json:
        click.echo(f"degraded: {'; '.join(found)}" if found else "healthy")
    raise SystemExit(1 if found else 0)


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
    if status.get("instances"):
        instances = Table("instance", "role", "address", "process", "endpoint", "alive", "lag_ms")
        for i in status["instances"]:
            instances.add_row(i["name"], i["role"], i["address"], i["process"], i["endpoint"], str(i["alive"]),
                              str(i["lag_ms"]))
        console.print(instances)
        for i in status["instances"]:  # whole, unwrapped: to copy into psql
            click.echo(f"{i['name']} dsn: {i['dsn']}  (password: {i['password_file']}, user:password)")
    repairs = status.get("repairs") or {}
    for r in repairs.get("in_progress", []):
        console.print(f"repair pg {r['pg']}: {r['lost']} -> {r['target']} {r['step']} {r['pct']}%")
    for w in repairs.get("waiting", []):
        console.print(f"waiting pg {w['pg']} ({w['lost']}): {w['reason']}")


def _fault(action: str, doc: str) -> click.Command:
    @click.command(name=action, help=doc)
    @click.argument("name")
    @DIR_OPTION
    @JSON_OPTION
    @user_errors
    def command(name: str, directory: Path, as_json: bool) -> None:
        fleet = fleet_mod.Fleet.load(directory)
        if name not in fleet.nodes and name not in fleet.instances:
            known = ", ".join([*fleet.nodes, *fleet.instances])
            raise fleet_mod.FleetError(f"unknown node or instance {name!r}; known: {known}")
        getattr(fleet, action)(name)
        if action == "restart" and name in fleet.instances:
            asyncio.run(fleet.wait_instances([name]))  # the new writer has recovered and sealed
        elif action == "restart":
            asyncio.run(fleet_mod.wait_ready([fleet.nodes[name]]))
        state = fleet.state(name)
        click.echo(json.dumps({"name": name, "action": action, "state": state}) if as_json
                   else f"{action} {name}: process {state}")

    return command


for _action, _doc in (
    ("kill", "SIGKILL a node's or an instance's process (its data stays)."),
    ("pause", "SIGSTOP a node or an instance."),
    ("resume", "SIGCONT a paused node or instance."),
    ("restart", "Kill a node or instance if running and start it again (an instance: a new "
                "writer, Writer.open = recovery + seal)."),
):
    playground.add_command(_fault(_action, _doc))


@playground.command()
@DIR_OPTION
@click.option("--purge", is_flag=True, help="also delete the playground directory")
@JSON_OPTION
@user_errors
def down(directory: Path, purge: bool, as_json: bool) -> None:
    """Stop every node and instance of the fleet (and its repair supervisor). Only
    processes this fleet started are signalled: a pid reused by another process is left
    alone."""
    fleet = fleet_mod.Fleet.load(directory)
    stopped = fleet.down()
    left = fleet_mod.purge(directory) if purge else []  # only what the fleet wrote
    click.echo(json.dumps({"dir": str(directory), "stopped": stopped, "purged": purge, "left": left}) if as_json
               else f"fleet in {directory} stopped ({', '.join(stopped) or 'nothing was running'})"
               + (f"; kept what the fleet did not write: {', '.join(left)}" if left else ""))


@playground.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".tidemark-demo"),
              show_default=True, help="the demo's own work dir (never a running fleet's): absent, empty "
                                      "or left by an earlier demo/chaos run")
@click.option("--phase-seconds", type=float, default=4.0, show_default=True, help="how long each fault lasts")
@click.option("--clients", type=int, default=4, show_default=True, help="concurrent transfer clients on the writer")
@click.option("--base-ip", default="127.0.0.10", show_default=True, help="first node address")
@click.option("--keep", is_flag=True, help="leave the fleet running at the end (for psql)")
@JSON_OPTION
@user_errors
def demo(directory: Path, phase_seconds: float, clients: int, base_ip: str, keep: bool, as_json: bool) -> None:
    """A database on the fleet through faults: a writer and a replica, bank tables, a
    transfer workload through psycopg while a node, a zone, zone+1, the writer (failover)
    and the replica are SIGKILLed and restored; then the invariant is checked.

    Exit status 0 when it held. With --json the progress goes to stderr and a summary
    (ok, acked, failover_s, phases, checks, problems, …) to stdout."""
    if clients < 1 or phase_seconds <= 0:
        raise fleet_mod.FleetError("--clients must be >= 1 and --phase-seconds > 0")
    fleet_mod.check_options(2, 4, 1024, 4096, base_ip, instances=2)
    console = Console(highlight=False, soft_wrap=True, stderr=as_json)
    result = asyncio.run(run_demo(directory, phase_seconds, base_ip, clients, keep, console))
    if as_json:
        click.echo(json.dumps(result.to_json()))
    raise SystemExit(0 if result.ok else 1)


@playground.command()
@DIR_OPTION
@click.option("--node-loss-timeout", type=float, default=30.0, show_default=True)
@click.option("--max-concurrent", type=int, default=4, show_default=True)
@click.option("--bandwidth", type=int, default=0, show_default=True)
@user_errors
def supervise(directory: Path, node_loss_timeout: float, max_concurrent: int, bandwidth: int) -> None:
    """Run the repair loop in the foreground (`up` starts it in the background)."""
    fleet_mod.Fleet.load(directory)  # a fleet must be there
    limits = RepairLimits(
        node_loss_timeout=node_loss_timeout, max_concurrent=max_concurrent, bandwidth_bytes_per_s=bandwidth
    )
    asyncio.run(Supervisor(directory, limits).run_forever())
