"""`tidemark node ...`: run a storage node."""

from __future__ import annotations

import logging
import ssl
import sys

import click
import structlog
import uvloop
from aiohttp import web

from tidemark_backup import images
from tidemark_backup.sealed import Keyring
from tidemark_protocol.node_auth import BadKey, NodeCredentials, Role, Verifier, parse_keys

from .app import make_app
from .server_tls import ServerTLS
from .state import Settings
from .tls import peer_trust


def setup_logging(node: str, zone: str, level: str = "INFO") -> None:
    """JSON lines on stderr, one event per line, tagged with the node's identity."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(stream=sys.stderr, level=lvl, format="%(message)s")
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(node=node, zone=zone)


def node_auth(key_file: str | None, insecure: bool) -> tuple[Verifier | None, dict[str, str]]:
    """The node's token check and the header it presents to its peers."""
    if key_file is None:
        if not insecure:
            raise click.UsageError("the node API needs --auth-key-file F (the fleet's node key), "
                                   "or --insecure-no-auth for a throwaway node")
        return None, {}
    if insecure:
        raise click.UsageError("--auth-key-file and --insecure-no-auth exclude each other")
    try:
        with open(key_file, encoding="utf-8") as f:
            keys = parse_keys(f.read())
    except (OSError, UnicodeDecodeError, BadKey) as exc:
        raise click.UsageError(f"--auth-key-file {key_file}: {exc}") from exc
    return Verifier(keys), NodeCredentials.from_keys(keys, (Role.PEER,)).headers(Role.PEER)


@click.group()
def node() -> None:
    """Storage node commands."""


@node.command()
@click.option("--name", required=True, help="node name (as used in PG memberships)")
@click.option("--zone", required=True, help="availability zone label")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True)
@click.option("--data", "data_dir", required=True, type=click.Path(file_okay=False))
@click.option("--gossip-interval", type=float, default=1.0, show_default=True)
@click.option("--materialize-interval", type=float, default=0.5, show_default=True)
@click.option("--materialize-min-batch", type=int, default=5000, show_default=True,
              help="backlog (records) that triggers materialization without waiting")
@click.option("--materialize-chunk", type=int, default=20_000, show_default=True,
              help="most records coalesced in one materialization step")
@click.option("--gc-interval", type=float, default=5.0, show_default=True)
@click.option("--gc-log-tail", type=int, default=100_000, show_default=True,
              help="LSNs of log kept below SCL for lagging peers")
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--scrub-interval", type=float, default=300.0, show_default=True,
              help="seconds between scrub passes (CRC checks of stored data; 0: off)")
@click.option("--backup", "backup_url", default=None, envvar="TIDEMARK_BACKUP",
              help="continuous backup target: s3://bucket/prefix or file:///path")
@click.option("--backup-interval", type=float, default=2.0, show_default=True,
              help="seconds between log chunk uploads")
@click.option("--backup-snapshot-interval", type=float, default=60.0, show_default=True,
              help="seconds between automated snapshots of a PG")
@click.option("--backup-retention-days", type=click.FloatRange(1, 35), default=1.0, show_default=True)
@click.option("--backup-extent-kib", type=click.IntRange(4, 64 << 10), default=images.EXTENT_BYTES >> 10,
              show_default=True,
              help="span of a base image's extents: a new image re-stores each extent with a changed "
                   "page (smaller: less storage for scattered changes; larger: fewer objects, faster restores)")
@click.option("--backup-key-file", "backup_key_files", multiple=True, type=click.Path(dir_okay=False),
              help="encrypt backup objects with this key (repeatable: the first encrypts, all "
                   "decrypt; 32 bytes as hex or base64)")
@click.option("--auth-key-file", type=click.Path(dir_okay=False, exists=True), default=None,
              help="the fleet's node key file: every route but /livez, /readyz and /metrics needs a "
                   "token derived from it (one key per line: the first is current, all are accepted)")
@click.option("--insecure-no-auth", is_flag=True, default=False,
              help="serve the node API to ANY client without a token (a throwaway node only)")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True), default=None,
              help="serve https with this certificate (PEM; reloaded when the file changes)")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True), default=None,
              help="the certificate's private key (PEM)")
@click.option("--tls-ca", type=click.Path(dir_okay=False, exists=True), default=None,
              help="verify https peers against this CA (PEM) instead of the system's")
@click.option("--tls-verify", type=click.Choice(["full", "ca"]), default="full", show_default=True,
              help="peers' certificates: full checks the chain and that it names the peer's address; "
                   "ca the chain alone (Kubernetes: peers are dialled by pod IP)")
@click.option("--enable-fault-injection", is_flag=True, default=False,
              help="serve the fake disk corruption endpoints (tests and `tidemark chaos` only)")
@click.option("--trace-console", is_flag=True, default=False,
              help="export trace spans (batch commits) to stderr")
def run(
    name: str,
    zone: str,
    host: str,
    port: int,
    data_dir: str,
    gossip_interval: float,
    materialize_interval: float,
    materialize_min_batch: int,
    materialize_chunk: int,
    gc_interval: float,
    gc_log_tail: int,
    log_level: str,
    scrub_interval: float,
    backup_url: str | None,
    backup_interval: float,
    backup_snapshot_interval: float,
    backup_retention_days: float,
    backup_extent_kib: int,
    backup_key_files: tuple[str, ...],
    auth_key_file: str | None,
    insecure_no_auth: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_ca: str | None,
    tls_verify: str,
    enable_fault_injection: bool,
    trace_console: bool,
) -> None:
    """Run a storage node until SIGTERM/SIGINT."""
    setup_logging(name, zone, log_level)
    keyring = Keyring.from_files(backup_key_files)  # a bad key file stops the start: one line
    verifier, peer_headers = node_auth(auth_key_file, insecure_no_auth)
    if (tls_cert is None) != (tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    try:
        server_tls = ServerTLS(tls_cert, tls_key) if tls_cert and tls_key else None
        peer_tls = peer_trust(tls_ca, check_hostname=tls_verify == "full") if tls_ca else None
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"TLS files: {exc}") from exc
    if verifier is None:
        structlog.get_logger("tidemark.node").warning(
            "node_api_unauthenticated", detail="--insecure-no-auth: ANY client may call every route")
    settings = Settings(
        name=name,
        zone=zone,
        data=data_dir,
        gossip_interval=gossip_interval,
        materialize_interval=materialize_interval,
        materialize_min_batch=materialize_min_batch,
        materialize_chunk=materialize_chunk,
        gc_interval=gc_interval,
        gc_log_tail=gc_log_tail,
        scrub_interval=scrub_interval,
        backup=backup_url,
        backup_options={"interval": backup_interval, "snapshot_interval": backup_snapshot_interval,
                        "retention_days": backup_retention_days, "extent_bytes": backup_extent_kib << 10,
                        "keyring": keyring},
        fault_injection=enable_fault_injection,
        trace_console=trace_console,
        auth=verifier,
        peer_headers=peer_headers,
        peer_tls=peer_tls,
        server_tls=server_tls,
    )
    app = make_app(settings)
    # aiohttp turns SIGTERM/SIGINT into a graceful exit: on_shutdown/on_cleanup run.
    # uvloop: the node's foreground is frames in and acks out over TLS WebSockets, which
    # its event loop runs with less CPU than asyncio's (docs/benchmarks.md).
    web.run_app(
        app, host=host, port=port, print=None, access_log=None, handle_signals=True,
        ssl_context=server_tls.context if server_tls is not None else None,
        shutdown_timeout=5.0, loop=uvloop.new_event_loop(),
    )
