"""`tidemark sql serve`: one database instance (writer or read replica) over the
playground fleet in DIR, or (`--from-cluster NAME`) over an AuroraCluster's storage pods:
the container entrypoint of the operator's instance pods.

What an AuroraCluster is (its placement ConfigMap, its pods, the writer Lease's name) is
the operator's knowledge, a layer above this one: the `tidemark` command wires it in as
a ClusterBinding (tidemark_cli.sql) and `make_group` builds the command around it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import structlog
import uvloop

from tidemark_compute.reader import Reader
from tidemark_compute.topology import (
    Topology,
    load_token_credentials,
    load_topology,
    membership_source,
    record_volume_epoch,
)
from tidemark_compute.writer import Writer
from tidemark_node.server_tls import ServerTLS
from tidemark_protocol.feed import feed_token
from tidemark_protocol.node_auth import BadToken, NodeCredentials

from . import telemetry
from .endpoint import Endpoint
from .instance import Instance
from .kube_lease import KubeWriterLease, LeaseFeed
from .lease import WriterLease, feed_url
from .replica import ReplicaInstance
from .scram import PASSWORD_ENV, Verifier, load_credentials, parse_credentials

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


@dataclass(frozen=True)
class ClusterAccess:
    """An AuroraCluster as an instance sees it."""

    namespace: str
    topology_source: Callable[[], Awaitable[Topology]]  # the storage pods and PG memberships, now
    coordination: Any  # a kubernetes CoordinationV1Api
    lease_name: str  # the writer Lease


# (cluster, namespace or None, node tokens or None: the binding finds them, the nodes' CA
# file or None: likewise) -> access
ClusterBinding = Callable[[str, str | None, NodeCredentials | None, Path | None], ClusterAccess]


def _node_tokens(directory: Path | None) -> NodeCredentials | None:
    """The storage nodes' tokens of a mounted Secret (`writer.token`, `reader.token`)."""
    if directory is None:
        return None
    try:
        return load_token_credentials(directory)
    except (OSError, BadToken) as exc:
        raise click.UsageError(f"--node-tokens-dir {directory}: {exc}") from exc


def credentials_from_dir(directory: Path) -> dict[str, Verifier]:
    """A mounted kubernetes.io/basic-auth Secret: files `username` and `password`."""
    user = (directory / "username").read_text().strip()
    password = (directory / "password").read_text().strip()
    return parse_credentials(f"{user}:{password}")


def _credentials_text(credentials_dir: Path | None, password_file: Path | None) -> str:
    """The instances' shared secret: what every instance of a cluster reads the same."""
    if credentials_dir is not None:
        return (credentials_dir / "password").read_text().strip()
    if password_file is not None:
        return password_file.read_text().strip()
    return os.environ.get(PASSWORD_ENV, "")


async def _run(instance: Endpoint, banner: str, exit_when: Callable[[], str | None] = lambda: None,
               tls: Sequence[ServerTLS | None] = ()) -> int:
    """Serve until SIGINT/SIGTERM (exit code 0) or until EXIT_WHEN names a reason (1),
    then close the instance. TLS: each certificate's files are re-read when they change
    (a renewed Secret: new handshakes get the new certificate, no restart)."""
    click.echo(f"tidemark sql: {banner} on {instance.dsn} (admin {instance.admin.url})", err=True)
    loops = [t.reload_loop() for t in dict.fromkeys(tls) if t is not None]
    reload = asyncio.ensure_future(asyncio.gather(*loops)) if loops else None
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
            if (why := exit_when()) is not None:
                log.error("instance_exiting", reason=why)
                return 1
    finally:
        if reload is not None:
            reload.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reload
        await instance.close()
    return 0


def _refuse_taken_address(host: str, port: int) -> None:
    """A writer started for an address another instance still serves would seal the volume
    (fencing that live writer) and only then fail to listen: look before opening."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise click.ClickException(f"{host}:{port} is in use ({exc.strerror}): another instance serves "
                                       "there; not opening the volume") from None


async def _serve(directory: Path, host: str, port: int, credentials: dict, insecure: bool,
                 cache_size: int | None, multi_range: bool, max_connections: int, admin_port: int,
                 tls: ServerTLS | None = None, require_tls: bool = False) -> None:
    telemetry.setup("writer")
    _refuse_taken_address(host, port)
    topology = load_topology(directory)
    writer = await Writer.open(topology, membership_source=membership_source(directory))
    record_volume_epoch(directory, topology.volume_epoch)
    instance = await Instance.start(writer, host, port, credentials, insecure, cache_size, multi_range,
                                    max_connections, admin_port=admin_port, tls=_context(tls), require_tls=require_tls)
    lease = WriterLease(directory, topology.volume_epoch)
    lease.claim(f"ws{instance.admin.url[4:]}/v1/feed")
    instance.pipeline.lease = lease.holds
    await _run(instance, f"writer instance (volume epoch {topology.volume_epoch})", tls=[tls])


async def _serve_replica(directory: Path, host: str, port: int, credentials: dict, insecure: bool,
                         cache_size: int | None, max_connections: int, admin_port: int,
                         writer_feed: str | None, tls: ServerTLS | None = None,
                         require_tls: bool = False) -> None:
    """Never Writer.open(): that would seal the volume and fence the real writer."""
    reader = Reader(load_topology(directory), (lambda: writer_feed) if writer_feed else (lambda: feed_url(directory)),
                    membership_source(directory))
    telemetry.setup("replica", lambda: reader.lag_ms)
    await reader.start()
    instance = await ReplicaInstance.start(reader, host, port, credentials, insecure, cache_size, max_connections,
                                           admin_port=admin_port, tls=_context(tls), require_tls=require_tls)
    await _run(instance, f"replica instance (read point {instance.store.read_point})", tls=[tls])


async def _serve_cluster(access: ClusterAccess, identity: str, host: str, port: int, credentials: dict,
                         cache_size: int | None, multi_range: bool, max_connections: int,
                         admin: tuple[str, int], max_lag_ms: float, token: str, tls: ServerTLS | None = None,
                         require_tls: bool = False, admin_tls: ServerTLS | None = None) -> int:
    """The writer of an AuroraCluster: open the volume (recovery + seal: every older writer
    is fenced on the nodes), claim the writer Lease, serve. A writer whose Lease expired
    (no renewal for its duration: cut off from the apiserver) exits, so its pod restarts
    and a fresh Writer.open decides; one superseded by a newer epoch keeps refusing
    (57P01), since restarting it would fence the newer writer in turn, until that newer
    writer stops renewing the Lease for its duration (gone too): then it exits, to be
    restarted as the writer."""
    telemetry.setup("writer")
    topology = await access.topology_source()
    writer = await Writer.open(topology, membership_source=access.topology_source)
    instance = await Instance.start(writer, host, port, credentials, False, cache_size, multi_range,
                                    max_connections, admin_port=admin[1], admin_host=admin[0], feed_token=token,
                                    tls=_context(tls), require_tls=require_tls, admin_tls=_context(admin_tls))
    instance.admin.max_lag_ms = max_lag_ms
    lease = KubeWriterLease(access.coordination, access.namespace, access.lease_name, identity,
                            writer.core.volume_epoch)
    await lease.claim(f"ws{instance.admin.url[4:]}/v1/feed")
    instance.pipeline.lease = lease.holds

    def lost() -> str | None:
        if lease.successor_gone:
            return f"superseded, and the newer writer stopped renewing {access.lease_name} for {lease.duration} s"
        if lease.expired and not lease.superseded:
            return f"writer lease {access.lease_name} not renewed for {lease.duration} s"
        return None

    try:
        return await _run(instance, f"writer instance {identity} (volume epoch {writer.core.volume_epoch})", lost,
                          [tls, admin_tls])
    finally:
        await lease.close()


async def _serve_cluster_replica(access: ClusterAccess, host: str, port: int, credentials: dict,
                                 cache_size: int | None, max_connections: int, admin: tuple[str, int],
                                 max_lag_ms: float, token: str, tls: ServerTLS | None = None,
                                 require_tls: bool = False, admin_tls: ServerTLS | None = None) -> int:
    """A replica of an AuroraCluster: follows the feed named in the writer Lease (wss://
    when the writer's admin endpoint is https: verified against the nodes' CA, the
    cluster's one CA, chain only, as the feed is dialled by pod IP)."""
    feed = LeaseFeed(access.coordination, access.namespace, access.lease_name)
    await feed.start()
    reader = Reader(await access.topology_source(), feed, access.topology_source, feed_token=token)
    telemetry.setup("replica", lambda: reader.lag_ms)
    try:
        await reader.start()
        instance = await ReplicaInstance.start(reader, host, port, credentials, False, cache_size, max_connections,
                                               admin_port=admin[1], admin_host=admin[0], tls=_context(tls),
                                               require_tls=require_tls, admin_tls=_context(admin_tls))
        instance.admin.max_lag_ms = max_lag_ms
        return await _run(instance, f"replica instance (read point {instance.store.read_point})",
                          tls=[tls, admin_tls])
    finally:
        await feed.close()


def _tls(cert: Path | None, key: Path | None, flags: str = "--tls") -> ServerTLS | None:
    if (cert is None) != (key is None):
        raise click.UsageError(f"{flags}-cert and {flags}-key go together")
    if cert is None or key is None:
        return None
    try:
        return ServerTLS(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise click.UsageError(f"{flags}-cert/{flags}-key: {exc}") from exc


def _context(tls: ServerTLS | None) -> ssl.SSLContext | None:
    return tls.context if tls is not None else None


def make_group(binding: ClusterBinding | None = None) -> click.Group:
    """The `sql` command group; BINDING enables `serve --from-cluster`."""

    @click.group()
    def sql() -> None:
        """Database instances: SQLite over the fleet, PostgreSQL wire protocol."""

    sql.add_command(_serve_command(binding))
    return sql


def _serve_command(binding: ClusterBinding | None) -> click.Command:


    @click.command()
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
    @click.option("--from-cluster", default=None, metavar="NAME",
                  help="Serve the AuroraCluster NAME's volume (its placement ConfigMap, storage pods and "
                       "writer Lease) instead of the playground in DIR.")
    @click.option("--namespace", default=None, help="Namespace of --from-cluster (default: in-cluster/kubeconfig).")
    @click.option("--identity", envvar="POD_NAME", default=None,
                  help="--from-cluster: the holder name in the writer Lease (default: $POD_NAME, else the host name).")
    @click.option("--credentials-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
                  help="A mounted basic-auth Secret: files username and password.")
    @click.option("--node-tokens-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
                  help="--from-cluster: the storage nodes' tokens (files writer.token / reader.token, a mounted "
                       "Secret; default: derived from the cluster's node-auth Secret when it may be read).")
    @click.option("--node-ca-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="--from-cluster: the CA the storage nodes' certificates are verified against (ca.crt, a "
                       "mounted Secret; default: the cluster's node-tls Secret's when it may be read).")
    @click.option("--tls-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="Offer TLS (sslmode=require/verify-full) with this certificate (PEM), re-read when the "
                       "file changes; with --from-cluster the admin endpoint (probes, status, replica feed) is "
                       "https with it too.")
    @click.option("--tls-key", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="The certificate's private key (PEM).")
    @click.option("--sql-tls-cert", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="The PostgreSQL port's certificate (PEM) when it is not --tls-cert's: one the user "
                       "brings (cert-manager's, a company CA's), re-read when the file changes; the admin "
                       "endpoint keeps --tls-cert.")
    @click.option("--sql-tls-key", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
                  help="--sql-tls-cert's private key (PEM).")
    @click.option("--require-tls", is_flag=True, help="Refuse clients that do not ask for TLS (SQLSTATE 28000).")
    @click.option("--max-lag-ms", type=click.FloatRange(min=0), default=None,
                  help="/readyz of a replica fails beyond this feed lag (the -ro Service drops it).")
    def serve(directory: Path, listen: str, role: str, admin_listen: str | None, writer_feed: str | None,
              password_file: Path | None, insecure_no_auth: bool, cache_size: int | None, multi_range_redo: bool,
              max_connections: int, from_cluster: str | None, namespace: str | None, identity: str | None,
              credentials_dir: Path | None, node_tokens_dir: Path | None, node_ca_file: Path | None,
              max_lag_ms: float | None, tls_cert: Path | None, tls_key: Path | None, sql_tls_cert: Path | None,
              sql_tls_key: Path | None, require_tls: bool) -> None:
        """Serve the database of the fleet in DIR (or of an AuroraCluster) on the PostgreSQL wire protocol."""
        host, port = _listen(listen)
        admin_tls = _tls(tls_cert, tls_key)
        tls = _tls(sql_tls_cert, sql_tls_key, "--sql-tls") or admin_tls  # the PostgreSQL port's
        if require_tls and tls is None:
            raise click.UsageError("--require-tls needs --tls-cert and --tls-key (or --sql-tls-cert and --sql-tls-key)")
        credentials = credentials_from_dir(credentials_dir) if credentials_dir else load_credentials(password_file)
        if from_cluster:
            if binding is None:
                raise click.UsageError("--from-cluster needs the `tidemark` command (it knows AuroraClusters)")
            if not credentials:
                raise click.UsageError("--from-cluster: no credentials (--credentials-dir, --password-file or "
                                       f"${PASSWORD_ENV})")
            # The admin endpoint is the pod's: kubelet probes and the operator read /readyz and
            # /v1/status there; its feed serves replicas presenting the token derived from the
            # instances' shared credentials (the pods are on different addresses).
            # The admin address is advertised (the feed URL in the writer Lease): with the
            # PostgreSQL port on every address (0.0.0.0, for port-forward) it must be named.
            admin = _listen(admin_listen) if admin_listen else (host, 0)
            if admin[0] in ("0.0.0.0", "::"):
                raise click.UsageError("--from-cluster: --admin-listen must name the pod's address "
                                       "(it is advertised to replicas), not a wildcard")
            token = feed_token(_credentials_text(credentials_dir, password_file))
            access = binding(from_cluster, namespace, _node_tokens(node_tokens_dir), node_ca_file)
            who = identity or socket.gethostname()
            if role == "replica":
                code = uvloop.run(_serve_cluster_replica(access, host, port, credentials, cache_size, max_connections,
                                                          admin, max_lag_ms or float("inf"), token, tls,
                                                          require_tls, admin_tls))
            else:
                code = uvloop.run(_serve_cluster(access, who, host, port, credentials, cache_size, multi_range_redo,
                                                  max_connections, admin, max_lag_ms or float("inf"),
                                                  token, tls, require_tls, admin_tls))
            sys.exit(code)
        if not credentials and not insecure_no_auth:
            raise click.UsageError(f"no credentials: --password-file F or ${PASSWORD_ENV}=user:password "
                                   "(or --insecure-no-auth on a playground)")
        if insecure_no_auth:
            click.echo("WARNING: --insecure-no-auth: ANY client may connect without a password", err=True)
        admin_host, admin_port = _listen(admin_listen) if admin_listen else (host if _loopback(host) else "127.0.0.1", 0)
        if not _loopback(admin_host):
            raise click.UsageError("--admin-listen: the admin endpoint (replica feed) binds loopback addresses only")
        if role == "replica":
            uvloop.run(_serve_replica(directory, host, port, credentials, insecure_no_auth, cache_size,
                                       max_connections, admin_port, writer_feed, tls, require_tls))
        else:
            uvloop.run(_serve(directory, host, port, credentials, insecure_no_auth, cache_size, multi_range_redo,
                               max_connections, admin_port, tls, require_tls))

    return serve


sql = make_group()
