"""`tidemark snapshot …` and `tidemark backup …`."""

from __future__ import annotations

import json

import click

from tidemark_backup import metrics as metrics_mod
from tidemark_backup.objstore import open_store

from .inventory import RestoreError, parse_time
from .snapshots import create_manual_snapshot, delete_manual_snapshot
from .status import status_of

FROM = click.option("--from", "url", required=True,
                    help="backup URL: s3://bucket/prefix or file:///path")
ENDPOINT = click.option("--endpoint", envvar="TIDEMARK_S3_ENDPOINT", default=None,
                        help="S3 endpoint (env TIDEMARK_S3_ENDPOINT); credentials from AWS_* env")


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
