"""`tidemark sql serve`: one database instance (writer or read replica) over the playground fleet in DIR."""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from pathlib import Path

import click
import structlog

from tidemark_compute.reader import Reader
from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.writer import Writer

from . import telemetry
from .endpoint import Endpoint
from .instance import Instance
from .lease import WriterLease, feed_url
from .replica import ReplicaInstance
from .scram import PASSWORD_ENV, load_credentials

log = structlog.get_logger("tidemark.sql.cli")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise click.BadParameter("expected HOST:PORT")
    return host or "127.0.0.1", int(port)


async def _run(instance: Endpoint, banner: str) -> None:
    """Serve until SIGINT/SIGTERM, then close the instance."""
    click.echo(f"tidemark sql: {banner} on {instance.dsn} (admin {instance.admin.url})", err=True)
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


async def _serve(directory: Path, host: str, port: int, credentials: dict, insecure: bool,
                 cache_size: int | None, multi_range: bool, max_connections: int, admin_port: int) -> None:
    telemetry.setup("writer")
    topology = load_topology(directory)
    writer = await Writer.open(topology, membership_source=membership_source(directory))
    record_volume_epoch(directory, topology.volume_epoch)
    instance = await Instance.start(writer, host, port, credentials, insecure, cache_size, multi_range,
                                    max_connections, admin_port=admin_port)
    lease = WriterLease(directory, topology.volume_epoch)
    lease.claim(f"ws{instance.admin.url[4:]}/v1/feed")
    instance.pipeline.lease = lease.holds
    await _run(instance, f"writer instance (volume epoch {topology.volume_epoch})")


async def _serve_replica(directory: Path, host: str, port: int, credentials: dict, insecure: bool,
                         cache_size: int | None, max_connections: int, admin_port: int,
                         writer_feed: str | None) -> None:
    """Never Writer.open(): that would seal the volume and fence the real writer."""
    reader = Reader(load_topology(directory), (lambda: writer_feed) if writer_feed else (lambda: feed_url(directory)),
                    membership_source(directory))
    telemetry.setup("replica", lambda: reader.lag_ms)
    await reader.start()
    instance = await ReplicaInstance.start(reader, host, port, credentials, insecure, cache_size, max_connections,
                                           admin_port=admin_port)
    await _run(instance, f"replica instance (read point {instance.store.read_point})")


@click.group()
def sql() -> None:
    """Database instances: SQLite over the fleet, PostgreSQL wire protocol."""


@sql.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".tidemark-playground"),
              show_default=True, help="The playground fleet (topology.json).")
@click.option("--listen", default="127.0.0.1:5432", show_default=True, help="HOST:PORT of the endpoint.")
@click.option("--role", type=click.Choice(["writer", "replica"]), default="writer", show_default=True,
              help="writer: opens the volume (recovery + seal, fencing any older writer); replica: "
                   "read-only, follows the writer's feed, never opens the volume.")
@click.option("--admin-listen", default=None,
              help="HOST:PORT of the admin endpoint (status, /metrics, the writer's replica feed); "
                   "default: the --listen host, any free port.")
@click.option("--writer-feed", default=None,
              help="Replica: the writer's feed URL (ws://HOST:PORT/v1/feed); default: from DIR/writer.json.")
@click.option("--password-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help=f"Lines of user:password (else ${PASSWORD_ENV}=user:password).")
@click.option("--insecure-no-auth", is_flag=True, help="Accept any client without a password (playground only).")
@click.option("--cache-size", type=int, default=None, help="SQLite PRAGMA cache_size (pages if > 0).")
@click.option("--multi-range-redo/--single-range-redo", default=True, show_default=True,
              help="One redo record per page carrying several byte ranges, or one record per range "
                   "(the single-patch format, for nodes that predate the multi patch).")
@click.option("--max-connections", type=int, default=64, show_default=True)
def serve(directory: Path, listen: str, role: str, admin_listen: str | None, writer_feed: str | None,
          password_file: Path | None, insecure_no_auth: bool, cache_size: int | None, multi_range_redo: bool,
          max_connections: int) -> None:
    """Serve the database of the fleet in DIR on the PostgreSQL wire protocol."""
    host, port = _listen(listen)
    credentials = load_credentials(password_file)
    if not credentials and not insecure_no_auth:
        raise click.UsageError(f"no credentials: --password-file F or ${PASSWORD_ENV}=user:password "
                               "(or --insecure-no-auth on a playground)")
    if insecure_no_auth:
        click.echo("WARNING: --insecure-no-auth: ANY client may connect without a password", err=True)
    admin_host, admin_port = _listen(admin_listen) if admin_listen else (host if _loopback(host) else "127.0.0.1", 0)
    if not _loopback(admin_host):
        raise click.UsageError("--admin-listen: the admin endpoint (replica feed) binds loopback addresses only")
    if role == "replica":
        asyncio.run(_serve_replica(directory, host, port, credentials, insecure_no_auth, cache_size,
                                   max_connections, admin_port, writer_feed))
    else:
        asyncio.run(_serve(directory, host, port, credentials, insecure_no_auth, cache_size, multi_range_redo,
                           max_connections, admin_port))
