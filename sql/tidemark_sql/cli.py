"""`tidemark sql serve`: one database instance over the playground fleet in DIR."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import click
import structlog

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.writer import Writer

from .instance import Instance
from .scram import PASSWORD_ENV, load_credentials

log = structlog.get_logger("tidemark.sql.cli")


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT")
    return host or "127.0.0.1", int(port)


async def _serve(directory: Path, host: str, port: int, credentials: dict, insecure: bool,
                 cache_size: int | None, multi_range: bool, max_connections: int) -> None:
    topology = load_topology(directory)
    writer = await Writer.open(topology, membership_source=membership_source(directory))
    record_volume_epoch(directory, topology.volume_epoch)
    instance = await Instance.start(writer, host, port, credentials, insecure, cache_size, multi_range,
                                    max_connections)
    click.echo(f"tidemark sql: writer instance on {instance.dsn} (volume epoch {topology.volume_epoch})", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reported = False
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass
            if instance.pipeline.failed is not None and not reported:  # once, not every 0.5 s
                log.error("instance_stopped", reason=str(instance.pipeline.failed))
                reported = True
    finally:
        await instance.close()


@click.group()
def sql() -> None:
    """Database instances: SQLite over the fleet, PostgreSQL wire protocol."""


@sql.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".tidemark-playground"),
              show_default=True, help="The playground fleet (topology.json).")
@click.option("--listen", default="127.0.0.1:5432", show_default=True, help="HOST:PORT of the endpoint.")
@click.option("--role", type=click.Choice(["writer"]), default="writer", show_default=True,
              help="Only the writer exists yet (replicas are not built).")
@click.option("--password-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help=f"Lines of user:password (else ${PASSWORD_ENV}=user:password).")
@click.option("--insecure-no-auth", is_flag=True, help="Accept any client without a password (playground only).")
@click.option("--cache-size", type=int, default=None, help="SQLite PRAGMA cache_size (pages if > 0).")
@click.option("--multi-range-redo/--single-range-redo", default=True, show_default=True,
              help="One redo record per page carrying several byte ranges, or one record per range "
                   "(the single-patch format, for nodes that predate the multi patch).")
@click.option("--max-connections", type=int, default=64, show_default=True)
def serve(directory: Path, listen: str, role: str, password_file: Path | None, insecure_no_auth: bool,
          cache_size: int | None, multi_range_redo: bool, max_connections: int) -> None:
    """Serve the database of the fleet in DIR on the PostgreSQL wire protocol."""
    host, port = _listen(listen)
    credentials = load_credentials(password_file)
    if not credentials and not insecure_no_auth:
        raise click.UsageError(f"no credentials: --password-file F or ${PASSWORD_ENV}=user:password "
                               "(or --insecure-no-auth on a playground)")
    if insecure_no_auth:
        click.echo("WARNING: --insecure-no-auth: ANY client may connect without a password", err=True)
    asyncio.run(_serve(directory, host, port, credentials, insecure_no_auth, cache_size, multi_range_redo,
                       max_connections))
