"""`tidemark workload`: mini-transactions against a fleet, optionally verified."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import click

from tidemark_compute.topology import (
    load_token_credentials,
    load_topology,
    membership_source,
    record_volume_epoch,
)
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, summarize, verify
from tidemark_compute.writer import Writer
from tidemark_operator.topology import READ_CA, READ_KEY, cluster_membership_source, trust_from_file
from tidemark_playground import fleet as fleet_mod


def refuse_sql_volume(directory: Path) -> None:
    """The raw page workload opens its own writer: on a volume a database instance owns,
    it would fence that writer and overwrite SQLite's pages."""
    if (directory / fleet_mod.FLEET_FILE).exists() and fleet_mod.Fleet.load(directory).instances:
        raise click.ClickException(
            f"the fleet in {directory} holds a database (instance {', '.join(fleet_mod.Fleet.load(directory).instances)}): "
            "`tidemark workload` would fence its writer and overwrite its pages; "
            "use a storage-only fleet (`tidemark playground up --instances 0 --dir OTHER`)")


class Progress:
    """One JSON line per interval on stderr: what a timeline (`tidemark chaos --cluster`)
    or a person watching `kubectl logs -f` reads while the workload runs."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.commits = 0
        self.latencies: list[float] = []

    def on_commit(self, latency_ms: float) -> None:
        self.commits += 1
        self.latencies.append(latency_ms)

    async def report(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            window, self.latencies = sorted(self.latencies), []
            p99 = window[int(0.99 * (len(window) - 1))] if window else None
            line = {"t": round(time.time(), 3), "commits": self.commits, "window_commits": len(window),
                    "p99_ms": round(p99, 2) if p99 is not None else None}
            sys.stderr.write(json.dumps({"progress": line}) + "\n")
            sys.stderr.flush()


async def _workload(
    directory: Path, seconds: float, do_verify: bool, concurrency: int, log_file: Path | None, seed: int,
    from_cluster: str | None = None, namespace: str | None = None, progress: float = 0.0,
    node_tokens_dir: Path | None = None, node_ca_file: Path | None = None,
) -> dict:
    if from_cluster:  # an AuroraCluster's placement ConfigMap + pod IPs
        # a pod's mounted writer token and node CA, else from the node-auth and node-tls
        # Secrets (a kubeconfig user)
        tokens = load_token_credentials(node_tokens_dir) if node_tokens_dir else READ_KEY
        tls = trust_from_file(str(node_ca_file)) if node_ca_file else READ_CA
        source = cluster_membership_source(from_cluster, namespace, credentials=tokens, tls=tls)
        topology = await source()
    else:
        refuse_sql_volume(directory)
        topology = load_topology(directory)
        source = membership_source(directory)
    model = Model(log_file)
    writer = await Writer.open(topology, membership_source=source)
    if not from_cluster:
        record_volume_epoch(directory, topology.volume_epoch)
    try:
        started = time.monotonic()
        meter = Progress(progress)
        reporter = asyncio.create_task(meter.report()) if progress > 0 else None
        try:
            stats = await run_workload(writer, model, seconds, concurrency=concurrency, seed=seed,
                                       on_commit=meter.on_commit)
        finally:
            if reporter is not None:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
        elapsed = time.monotonic() - started if seconds > 0 else 0.0
        result = await verify(writer, model) if do_verify else None
        out = summarize(stats, max(elapsed, seconds, 1e-9), result)
        out["volume_epoch"] = topology.volume_epoch
        out["vdl"] = writer.vdl
        return out
    finally:
        model.close()
        await writer.close()


@click.command()
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=Path(".tidemark-playground"), show_default=True)
@click.option("--seconds", type=float, required=True, help="How long to write (0: only recover and verify).")
@click.option("--verify", "do_verify", is_flag=True, help="Re-read and check every acknowledged commit.")
@click.option("--concurrency", type=int, default=32, show_default=True)
@click.option("--log", "log_file", type=click.Path(path_type=Path), default=None,
              help="Append intents and acks here; a later run with the same log verifies them too.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--from-cluster", default=None, metavar="NAME",
              help="Use the AuroraCluster NAME (placement ConfigMap + pod IPs) instead of DIR.")
@click.option("--namespace", default=None, help="Namespace of --from-cluster (default: in-cluster/kubeconfig).")
@click.option("--progress", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help='Every SECONDS, a JSON line {"progress": {t, commits, window_commits, p99_ms}} on stderr (0: off).')
@click.option("--node-tokens-dir", type=click.Path(path_type=Path, exists=True, file_okay=False), default=None,
              help="--from-cluster: the storage nodes' writer token (file writer.token, a mounted Secret; default: "
                   "derived from the cluster's node-auth Secret when it may be read).")
@click.option("--node-ca-file", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="--from-cluster: the CA the storage nodes' certificates are verified against (ca.crt, a mounted "
                   "Secret; default: the cluster's node-tls Secret's when it may be read).")
def workload(directory: Path, seconds: float, do_verify: bool, concurrency: int, log_file: Path | None, seed: int, as_json: bool,
             from_cluster: str | None = None, namespace: str | None = None, progress: float = 0.0,
             node_tokens_dir: Path | None = None, node_ca_file: Path | None = None) -> None:
    """Run mini-transactions against the fleet in DIR (or an AuroraCluster)."""
    out = asyncio.run(_workload(directory, seconds, do_verify, concurrency, log_file, seed, from_cluster, namespace,
                                progress, node_tokens_dir, node_ca_file))
    if as_json:
        click.echo(json.dumps(out))
    else:
        for key, value in out.items():
            click.echo(f"{key:>14}: {value}")
    if do_verify and not out.get("verified", False):
        raise SystemExit(1)
