"""`tidemark snapshot …` and `tidemark backup …`."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any, TypeVar

import click
from botocore.exceptions import BotoCoreError, ClientError

from tidemark_backup import metrics as metrics_mod
from tidemark_backup.objstore import ObjStore, open_store
from tidemark_backup.sealed import Keyring, load_key_file
from tidemark_protocol.errors import UserError

from .inventory import RestoreError, parse_time
from .snapshots import create_manual_snapshot, delete_manual_snapshot, manual_snapshot_exists
from .status import status_of_store

FROM = click.option("--from", "url", required=True,
                    help="backup URL: s3://bucket/prefix or file:///path")
ENDPOINT = click.option("--endpoint", envvar="TIDEMARK_S3_ENDPOINT", default=None,
                        help="S3 endpoint (env TIDEMARK_S3_ENDPOINT); credentials from AWS_* env")
KEYS = click.option("--backup-key-file", "key_files", multiple=True, type=click.Path(dir_okay=False),
                    help="a key the backup's objects are encrypted with (repeatable: a keyring; "
                         "the first encrypts what this command writes)")


def open_from(url: str, endpoint: str | None, key_files: tuple[str, ...]) -> ObjStore:
    """The store at URL, its objects opened (and new ones sealed) with the key files."""
    return open_store(url, endpoint, keyring=Keyring.from_files(key_files))

# What a user can fix beyond UserError (a bad URL or time, an empty store) and OSError:
# missing credentials, an unreachable endpoint, a bucket that refuses us.
Command = TypeVar("Command", bound=Callable[..., Any])
USER_ERRORS = (BotoCoreError, ClientError)


def one_line_errors(errors: tuple[type[BaseException], ...]) -> Callable[[Command], Command]:
    """A click command decorator: ERRORS (what a user can fix, though not a UserError)
    become a UserError, which the `tidemark` command reports the one way: one line on
    stderr, a JSON {"error": …} object with --json, exit 1 (tidemark_cli.errors)."""

    def decorate(command: Command) -> Command:
        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return command(*args, **kwargs)
            except UserError:
                raise
            except errors as exc:
                raise UserError(" ".join(str(exc).split()) or type(exc).__name__) from exc

        return run  # type: ignore[return-value]

    return decorate


user_errors = one_line_errors(USER_ERRORS)


@click.group()
def snapshot() -> None:
    """Manual snapshots: kept until deleted."""


@snapshot.command("create")
@FROM
@ENDPOINT
@KEYS
@click.option("--name", default=None, help="the snapshot's name (default: snap-<UTC time>); must be new")
@click.option("--at", "at_time", default=None, help="RFC 3339 time (default: latest restorable)")
@click.option("--json", "as_json", is_flag=True)
@user_errors
def snapshot_create(url: str, endpoint: str | None, key_files: tuple[str, ...], name: str | None,
                    at_time: str | None, as_json: bool) -> None:
    """Write a manual snapshot of the backup at a time (kept until deleted)."""
    store = open_from(url, endpoint, key_files)
    if name is not None and manual_snapshot_exists(store, name):
        raise RestoreError(f"a manual snapshot {name!r} already exists in {url}: pick another --name "
                           "or `tidemark snapshot delete` it first")
    info = create_manual_snapshot(store, name, parse_time(at_time) if at_time else None)
    pages = info["pages"]
    lsn = info["lsn"]
    name = info["name"]
    click.echo(json.dumps(info) if as_json else f"snapshot {name}: {pages} pages at LSN {lsn}")


@snapshot.command("list")
@FROM
@ENDPOINT
@KEYS
@click.option("--json", "as_json", is_flag=True)
@user_errors
def snapshot_list(url: str, endpoint: str | None, key_files: tuple[str, ...], as_json: bool) -> None:
    """List the manual snapshots in the backup."""
    store = open_from(url, endpoint, key_files)
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
@click.option("--json", "as_json", is_flag=True)
@user_errors
def snapshot_delete(url: str, endpoint: str | None, name: str, as_json: bool) -> None:
    """Delete manual snapshot NAME (no key needed: only names are read)."""
    store = open_store(url, endpoint)
    if not delete_manual_snapshot(store, name):
        raise RestoreError(f"no manual snapshot {name!r}")
    click.echo(json.dumps({"deleted": name}) if as_json else f"deleted {name}")


@click.group()
def backup() -> None:
    """Continuous backup: recoverability window and storage metrics."""


@backup.command("status")
@FROM
@ENDPOINT
@KEYS
@click.option("--retention-days", type=float, default=1.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def backup_status(url: str, endpoint: str | None, key_files: tuple[str, ...], retention_days: float,
                  as_json: bool) -> None:
    """Recoverability window and storage metrics; exit 1 when URL holds no backup."""
    out = status_of_store(open_from(url, endpoint, key_files), retention_days)
    if not out["objects"]:
        raise RestoreError(f"no Tidemark backup at {url}: the store holds no backup object")
    metrics_mod.export_otel({k: v for k, v in out.items() if isinstance(v, int)})
    if as_json:
        click.echo(json.dumps(out))
        return
    for key, value in out.items():
        if key != "restorableLsnIntervals":
            click.echo(f"{key:36} {value}")


@backup.command("key-id")
@click.argument("key_files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@user_errors
def backup_key_id(key_files: tuple[str, ...]) -> None:
    """Print the key id of each key file (the id errors and object headers name)."""
    for path in key_files:
        click.echo(f"{load_key_file(path).id}\t{path}")
