"""`tidemark restore`: point-in-time restore into a NEW playground fleet."""

from __future__ import annotations

import asyncio
import json
import random
import time
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from tidemark_backup.objstore import ObjStore, check_url
from tidemark_compute.topology import Topology, save_topology
from tidemark_restore.cli import ENDPOINT, FROM, KEYS, open_from, user_errors
from tidemark_restore.install import restore_inventory_into
from tidemark_restore.inventory import Inventory, RestoreError, load_inventory, parse_time

from . import fleet as fleet_mod
from .backup_keys import key_options

NODES_PER_ZONE = 2  # of the restored fleet


def random_base_ip() -> str:
    return f"127.{random.randint(100, 199)}.{random.randint(1, 250)}.10"


def restore_new_fleet(url_store: ObjStore, t_us: int, directory: Path, backup: str | None = None,
            base_ip: str | None = None, progress: bool = True, nodes_per_zone: int = 2,
            key_files: tuple[str, ...] = ()) -> dict:
    """`tidemark restore`: start a NEW playground fleet in `directory` with the backup's
    layout, then restore_inventory_into it. With `backup`, the new fleet encrypts with the
    first of KEY_FILES, else with a key generated into DIR (the playground's default)."""
    t0 = time.monotonic()
    inv = load_inventory(url_store)
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup: nothing to restore")
    target = inv.lsn_for(t_us)  # refuse a bad T before starting anything
    lay = inv.layout
    made = not directory.exists() or not any(directory.iterdir())
    kwargs = {"backup": backup, "backup_options": key_options(directory, [Path(k) for k in key_files], True)} \
        if backup else {}
    fleet, topology = asyncio.run(fleet_mod.up(directory, nodes_per_zone, lay.pg_count, lay.pages_per_pg,
                                               lay.page_size, base_ip or random_base_ip(), **kwargs))
    try:
        return _restore_started(url_store, inv, t_us, directory, topology, target, backup, t0, progress)
    except BaseException:
        # A restore that failed (a tampered object, the bucket gone) leaves no half-made
        # fleet behind: stop what it started and delete what it wrote (only that; a
        # backup key it generated stays, as a key may never be thrown away unseen).
        fleet.down()
        if made:
            fleet_mod.purge(directory)
        raise


def _restore_started(url_store: ObjStore, inv: Inventory, t_us: int, directory: Path, topology: Topology,
                     target: int,
                     backup: str | None, t0: float, progress: bool) -> dict:
    save_topology(directory, topology)
    t_fleet = time.monotonic() - t0
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=console, disable=not progress) as bar:
        tasks: dict[str, object] = {}
        labels = {"install": f"rebuild + install PGs at LSN {target}", "open": "open a writer"}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in labels:
                return
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels[phase], total=total)
            bar.update(tasks[phase], completed=done, total=total)

        result = restore_inventory_into(url_store, inv, t_us, topology, report, t0)
    return {**result, "dir": str(directory), "nodes": topology.nodes, "backup": backup,
            "fleet_s": round(t_fleet, 3)}


@click.command()
@FROM
@ENDPOINT
@KEYS
@click.option("--to-time", required=True, help="RFC 3339 time, e.g. 2026-11-22T20:15:03Z")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              default=Path(".tidemark-restore"), show_default=True)
@click.option("--backup", "backup_to", default=None, help="backup URL for the restored cluster")
@click.option("--base-ip", default=None, help="first node address of the new fleet (default: random 127.x.y.10)")
@click.option("--json", "as_json", is_flag=True, help="the result as JSON (errors as {\"error\": ...})")
@user_errors
def restore(url: str, endpoint: str | None, key_files: tuple[str, ...], to_time: str, directory: Path,
            backup_to: str | None, base_ip: str | None, as_json: bool) -> None:
    """Point-in-time restore into a NEW playground fleet in DIR (6 storage nodes)."""
    if (directory / fleet_mod.FLEET_FILE).exists():
        raise fleet_mod.FleetError(f"{directory} already holds a fleet: restore needs a new one")
    t_us = parse_time(to_time)  # every option checked before anything is read or started
    if base_ip is not None:
        fleet_mod.check_base_ip(base_ip, 3 * NODES_PER_ZONE)
    if backup_to is not None:
        check_url(backup_to)
    store = open_from(url, endpoint, key_files)  # a bad key file: refused before anything starts
    result = restore_new_fleet(store, t_us, directory, backup_to, base_ip, nodes_per_zone=NODES_PER_ZONE,
                               key_files=key_files)
    click.echo(json.dumps(result) if as_json else
               f"restored {result['pages']} pages at LSN {result['lsn']} ({result['to_time']}) "
               f"into {directory} in {result['total_s']}s")
