"""`tidemark restore`, `tidemark snapshot …` and `tidemark backup …`."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from . import chunks, layout
from . import metrics as metrics_mod
from .objstore import open_store
from .restore import RestoreError, iso, load_inventory, parse_time, rebuild_volume
from .restore import restore as do_restore

FROM = click.option("--from", "url", required=True,
                    help="backup URL: s3://bucket/prefix or file:///path")
ENDPOINT = click.option("--endpoint", envvar="TIDEMARK_S3_ENDPOINT", default=None,
                        help="S3 endpoint (env TIDEMARK_S3_ENDPOINT); credentials from AWS_* env")


@click.command()
@FROM
@ENDPOINT
@click.option("--to-time", required=True, help="RFC 3339 time, e.g. 2026-11-22T20:15:03Z")
@click.option("--dir", "directory", type=click.Path(path_type=Path),
              default=Path(".tidemark-restore"), show_default=True)
@click.option("--backup", "backup_to", default=None, help="backup URL for the restored cluster")
@click.option("--base-ip", default=None, help="first node address of the new fleet (default: random 127.x.y.10)")
@click.option("--json", "as_json", is_flag=True)
def restore(url: str, endpoint: str | None, to_time: str, directory: Path, backup_to: str | None,
            base_ip: str | None, as_json: bool) -> None:
    """Point-in-time restore into a NEW playground fleet in DIR."""
    if (directory / "fleet.json").exists():
        raise click.ClickException(f"{directory} already holds a fleet: restore needs a new one")
    store = open_store(url, endpoint)
    try:
        result = do_restore(store, parse_time(to_time), directory, backup_to, base_ip)
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(result) if as_json else
               f"restored {result['pages']} pages at LSN {result['lsn']} ({result['to_time']}) "
               f"into {directory} in {result['total_s']}s")


def create_manual_snapshot(store, name: str | None = None, t_us: int | None = None) -> dict:
    """Write manual snapshot NAME of the volume at time T_US (default: the latest
    restorable point); returns its manifest. Shared by `tidemark snapshot create` and
    the operator's AuroraSnapshot. Raises RestoreError when T is not restorable."""
    inv = load_inventory(store)
    if inv.layout is None:
        raise RestoreError("no PG manifest in the backup")
    _first, latest = inv.window()
    t_us = t_us if t_us is not None else latest
    lsn = inv.lsn_for(t_us) if t_us is not None else None
    if lsn is None:
        raise RestoreError("the backup has no restorable point yet")
    name = name or time.strftime("snap-%Y%m%dT%H%M%SZ", time.gmtime())
    pages = rebuild_volume(store, inv, lsn)
    lay = inv.layout
    total = 0
    for pg in range(lay.pg_count):
        mine = {p: img for p, img in pages.items() if lay.pg_of(p) == pg}
        hdr = {"pg": pg, "start": lsn, "end": lsn, "lsn": lsn, "page_size": lay.page_size,
               "epoch": 0, "node": "manual", "gen": 0, "created_us": int(time.time() * 1e6),
               "layout": lay.to_json()}
        data = chunks.encode_snap(hdr, mine)
        store.put(layout.manual_snap_key(name, pg), data)
        total += len(data)
    info = {"name": name, "created": time.time(), "lsn": lsn, "time": iso(t_us),
            "layout": lay.to_json(), "pages": len(pages), "volume_bytes": len(pages) * lay.page_size,
            "bytes": total}
    store.put(layout.manual_manifest_key(name), json.dumps(info).encode())
    return info


def delete_manual_snapshot(store, name: str) -> bool:
    """Delete manual snapshot NAME; False if there is none."""
    objs = [o for o in store.list(f"manual/{name}/") if o.name == name]
    for o in sorted(objs, key=lambda o: not o.key.endswith("manifest.json")):
        store.delete(o.key)  # manifest first: a half-deleted snapshot is not listed
    return bool(objs)


@click.group()
def snapshot() -> None:
    """Manual snapshots: kept until deleted."""


@snapshot.command("create")
@FROM
@ENDPOINT
@click.option("--name", default=None)
@click.option("--at", "at_time", default=None, help="RFC 3339 time (default: latest restorable)")
@click.option("--json", "as_json", is_flag=True)
def snapshot_create(url: str, endpoint: str | None, name: str | None, at_time: str | None, as_json: bool) -> None:
    store = open_store(url, endpoint)
    try:
        info = create_manual_snapshot(store, name, parse_time(at_time) if at_time else None)
    except RestoreError as exc:
        raise click.ClickException(str(exc)) from exc
    pages = info["pages"]
    lsn = info["lsn"]
    name = info["name"]
    click.echo(json.dumps(info) if as_json else f"snapshot {name}: {pages} pages at LSN {lsn}")


@snapshot.command("list")
@FROM
@ENDPOINT
@click.option("--json", "as_json", is_flag=True)
def snapshot_list(url: str, endpoint: str | None, as_json: bool) -> None:
    store = open_store(url, endpoint)
    snaps = metrics_mod.manual_snapshots(store, store.list("manual/"))
    if as_json:
        click.echo(json.dumps(snaps))
        return
    for s in snaps:
        click.echo(f"{s['name']}\t{s['time']}\tlsn={s['lsn']}\t{s['volume_bytes']} bytes")


@snapshot.command("delete")
@FROM
@ENDPOINT
@click.argument("name")
def snapshot_delete(url: str, endpoint: str | None, name: str) -> None:
    store = open_store(url, endpoint)
    if not delete_manual_snapshot(store, name):
        raise click.ClickException(f"no manual snapshot {name!r}")
    click.echo(f"deleted {name}")


@click.group()
def backup() -> None:
    """Continuous backup: recoverability window and storage metrics."""


def status_of(url: str, endpoint: str | None = None, retention_days: float = 1.0,
              now: float | None = None) -> dict:
    return status_of_store(open_store(url, endpoint), retention_days, now)


def status_of_store(store, retention_days: float = 1.0, now: float | None = None) -> dict:
    """Recoverability window and storage metrics of the backup in STORE (also used by the
    operator, which opens the store with a Secret's credentials)."""
    inv = load_inventory(store)
    manual = metrics_mod.manual_snapshots(store, inv.objs)
    first, latest = inv.window()
    out = metrics_mod.compute(inv.objs, manual, inv.layout.page_size if inv.layout else None,
                              retention_days * 86400.0, now, (first, latest), inv.problems)
    out["firstRecoverableTime"] = iso(first)
    out["latestRestorableTime"] = iso(latest)
    lsu = out["lastSuccessfulUpload"]
    out["lastSuccessfulUpload"] = iso(int(lsu * 1e6)) if lsu else None
    out["problems"] = inv.problems
    out["restorableLsnIntervals"] = inv.intervals()
    return out


@backup.command("status")
@FROM
@ENDPOINT
@click.option("--retention-days", type=float, default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def backup_status(url: str, endpoint: str | None, retention_days: float, as_json: bool) -> None:
    out = status_of(url, endpoint, retention_days)
    metrics_mod.export_otel({k: v for k, v in out.items() if isinstance(v, int)})
    if as_json:
        click.echo(json.dumps(out))
        return
    for key, value in out.items():
        if key != "restorableLsnIntervals":
            click.echo(f"{key:36} {value}")
