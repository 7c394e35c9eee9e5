"""`kubectl tidemark …` (the `kubectl-tidemark` executable): the cluster-side CLI for an
AuroraCluster, as `kubectl cnpg` is for CloudNativePG. Every command takes kubectl's
--kubeconfig, --context and --namespace/-n, and --json; user errors are reported the one
way of tidemark_cli.errors (one line, `{"error": …}` with --json, exit 1)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click
from kubernetes import client
from kubernetes.config.config_exception import ConfigException
from rich.console import Console

from tidemark_operator.topology import kube_namespace

from . import cluster_backup as cb
from . import cluster_restore as cr
from .cluster_chaos import EXPERIMENTS, SECONDS
from .cluster_chaos_command import run_on_cluster
from .cluster_view import EVENTS, gather
from .errors import ReportingGroup
from .kube_target import KubeError, Target, target_options
from .logging_setup import configure_logging, logging_options
from .maintenance_mode import set_maintenance
from .status_render import render_status
from .support_report import build_report, default_output, write_report
from .switchover_request import request_switchover

WAIT = click.option("--wait/--no-wait", default=True, show_default=True,
                    help="Wait for the operator to act on the change.")
TIMEOUT = click.option("--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True,
                       help="Seconds to wait at most (with --wait).")
CLUSTER = click.argument("name", metavar="NAME")


def stdout() -> Console:
    return Console(highlight=False, soft_wrap=True)


def stderr() -> Console:
    return Console(highlight=False, soft_wrap=True, stderr=True)


def emit(doc: Any, as_json: bool, text: str) -> None:
    click.echo(json.dumps(doc) if as_json else text)


@click.group(cls=ReportingGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tidemark")
@logging_options
def plugin(log_format: str, log_level: str) -> None:
    """kubectl tidemark: inspect and operate Tidemark AuroraClusters (status, support
    report, backups, snapshots and restores, maintenance mode, writer switchover, chaos
    experiments on kind)."""
    configure_logging(log_format, log_level)


@plugin.command("status")
@CLUSTER
@click.option("--events", "event_limit", type=click.IntRange(min=0), default=EVENTS, show_default=True,
              help="How many of the most recent events to show.")
@target_options
def status(target: Target, name: str, event_limit: int, as_json: bool) -> None:
    """Phase and conditions, storage nodes (pod, node, zone, PGs), PG health, repairs in
    flight, backup window, instances and the primary, recent events of AuroraCluster NAME.
    Exit status 1 when it is not healthy (not Ready, degraded, backup or an instance not
    healthy); the status is printed all the same."""
    summary = gather(target, name, event_limit)
    if as_json:
        click.echo(json.dumps(summary))
    else:
        render_status(stdout(), summary)
    raise SystemExit(0 if summary["healthy"] else 1)


@plugin.command("report")
@CLUSTER
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The tarball to write (default: ./tidemark-report-NAME-<UTC time>.tar.gz).")
@click.option("--tail", type=click.IntRange(min=1, max=100000), default=2000, show_default=True,
              help="Lines of each pod's log to include (the last ones).")
@click.option("--node-timeout", type=click.FloatRange(min=0.1, max=60), default=3.0, show_default=True,
              help="Seconds to wait for each storage node's /v1/status.")
@click.option("--operator-namespace", default=None,
              help="Namespace of the operator's pods (default: found by label in any namespace we may list).")
@target_options
def report(target: Target, name: str, output: Path | None, tail: int, node_timeout: float,
           operator_namespace: str | None, as_json: bool) -> None:
    """Write a support bundle of AuroraCluster NAME: its spec and status, owned objects
    (Secret names only, never their data), events, operator and pod logs (bounded tail),
    and each storage node's /v1/status; manifest.json inside lists what could not be
    collected. Progress on stderr."""
    err = stderr()
    now = time.time()
    out = output or default_output(name, now)
    data, manifest = build_report(target, name, tail, node_timeout, operator_namespace,
                                  lambda what: err.print(f"[dim]collecting {what}…[/]"), now)
    write_report(data, out)
    doc = {"output": str(out), "bytes": len(data), "files": len(manifest["files"]) + 1,
           "unreachable_nodes": manifest["unreachable_nodes"], "missing": len(manifest["missing"])}
    emit(doc, as_json, f"wrote {out} ({len(data)} bytes, {doc['files']} files; "
                       f"{doc['missing']} item(s) not collected, see manifest.json)")


@plugin.group("backup")
def backup() -> None:
    """The cluster's continuous backup, as its operator reports it."""


@backup.command("status")
@CLUSTER
@target_options
def backup_status(target: Target, name: str, as_json: bool) -> None:
    """Recoverable window, last upload, last error and storage metrics of NAME's backup
    (status.backup, camelCase as `tidemark backup status`). Exit status 1 when backup is
    not enabled or not healthy."""
    doc = cb.backup_status(target.cluster(name))
    if as_json:
        click.echo(json.dumps(doc))
    else:
        for key, value in doc.items():
            if key != "restorableLsnIntervals":
                click.echo(f"{key:36} {value}")
    raise SystemExit(0 if doc["healthy"] else 1)


@plugin.group("snapshot")
def snapshot() -> None:
    """Manual snapshots of a cluster's backup (AuroraSnapshot resources): kept until deleted."""


@snapshot.command("create")
@CLUSTER
@click.option("--name", "snap", default=None, help="The AuroraSnapshot's name (default: NAME-<UTC time>).")
@click.option("--at", "at_time", default=None, help="RFC 3339 time inside the backup's window (default: latest).")
@WAIT
@TIMEOUT
@target_options
def snapshot_create(target: Target, name: str, snap: str | None, at_time: str | None, wait: bool,
                    timeout: float, as_json: bool) -> None:
    """Create an AuroraSnapshot of cluster NAME (its spec.backup must be enabled) and, with
    --wait, wait until the operator has written it (Ready) or it failed."""
    row = cb.create_snapshot(target, name, snap or cb.default_snapshot_name(name, time.time()), at_time,
                             timeout if wait else None)
    emit(row, as_json, f"snapshot {row['name']}: {row['phase']}"
         + (f", {row['pages']} pages at LSN {row['lsn']} ({row['snapshot_time']})" if row["phase"] == "Ready" else ""))


@snapshot.command("list")
@CLUSTER
@target_options
def snapshot_list(target: Target, name: str, as_json: bool) -> None:
    """List the AuroraSnapshots of cluster NAME, oldest first."""
    target.cluster(name)
    rows = [cb.snapshot_row(s) for s in target.snapshots(name)]
    if as_json:
        click.echo(json.dumps(rows))
        return
    for r in rows:
        click.echo(f"{r['name']}\t{r['phase']}\t{r['snapshot_time'] or '-'}\tlsn={r['lsn']}\t"
                   f"{r['size_bytes'] if r['size_bytes'] is not None else '-'} bytes")


@snapshot.command("delete")
@CLUSTER
@click.argument("snap", metavar="SNAPSHOT")
@WAIT
@TIMEOUT
@target_options
def snapshot_delete(target: Target, name: str, snap: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Delete AuroraSnapshot SNAPSHOT of cluster NAME (the operator deletes its objects in
    the bucket); with --wait, until it is gone."""
    cb.delete_snapshot(target, name, snap, timeout if wait else None)
    emit({"deleted": snap}, as_json, f"deleted {snap}")


@plugin.group("maintenance")
def maintenance() -> None:
    """Maintenance mode: no new segment rebuilds while nodes are down on purpose (as Ceph's noout)."""


def _maintenance(target: Target, name: str, on: bool, wait: bool, timeout: float, as_json: bool) -> None:
    doc = set_maintenance(target, name, on, timeout if wait else None)
    emit(doc, as_json, f"maintenance {'on' if on else 'off'} for {name}"
         + (" (acknowledged by the operator)" if doc["acknowledged"] else ""))


@maintenance.command("on")
@CLUSTER
@WAIT
@TIMEOUT
@target_options
def maintenance_on(target: Target, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Pause new segment rebuilds of NAME (annotation tidemark.dev/maintenance=true); running
    ones finish. With --wait, until the operator shows the Maintenance condition True."""
    _maintenance(target, name, True, wait, timeout, as_json)


@maintenance.command("off")
@CLUSTER
@WAIT
@TIMEOUT
@target_options
def maintenance_off(target: Target, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Resume segment repairs of NAME: a pod still lost for nodeLossTimeout is rebuilt
    elsewhere on the operator's next pass."""
    _maintenance(target, name, False, wait, timeout, as_json)


def _switchover(target: Target, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    doc = request_switchover(target, name, timeout if wait else None)
    done = f": {doc['to']} serves after {doc['durationSeconds']} s" if doc.get("to") else " (requested)"
    emit(doc, as_json, f"switchover of {name} from {doc['from']}{done}")


@plugin.command("restore")
@click.argument("source", metavar="SOURCE")
@click.argument("name", metavar="NEW")
@click.option("--to-time", "at_time", default=None,
              help="RFC 3339 time inside SOURCE's backup window (default: the latest restorable time).")
@click.option("--backup/--no-backup", default=True, show_default=True,
              help="Back the new cluster up next to SOURCE's (same bucket, credentials and keys; prefix NEW).")
@click.option("--dry-run", is_flag=True, help="Print the AuroraCluster instead of creating it.")
@WAIT
@click.option("--timeout", type=click.FloatRange(min=1), default=1800.0, show_default=True,
              help="Seconds to wait at most (with --wait).")
@target_options
def restore(target: Target, source: str, name: str, at_time: str | None, backup: bool, dry_run: bool,
            wait: bool, timeout: float, as_json: bool) -> None:
    """Restore cluster SOURCE's database as of --to-time into a NEW AuroraCluster (its own
    pods, volume, -rw/-ro Services and credentials); SOURCE is not touched."""
    if dry_run:
        click.echo(json.dumps(cr.restore_body(target.cluster(source), name, at_time, backup), indent=2))
        return
    row = cr.create_restore(target, source, name, at_time, backup, timeout if wait else None)
    emit(row, as_json, f"restore {source} -> {row['name']}: {row['phase']}"
         + (f", {row['pages']} pages at LSN {row['lsn']} ({row['point_in_time']}) in {row['seconds']} s"
            if row["phase"] == "Done" else ""))


@plugin.command("switchover")
@CLUSTER
@WAIT
@TIMEOUT
@target_options
def switchover(target: Target, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Planned writer switchover of NAME: the writer pod is stopped (SIGTERM; every commit
    it answered is durable) and a new writer pod recovers the volume and takes the
    writer Lease. Replicas keep serving reads. With --wait, until the new writer serves."""
    _switchover(target, name, wait, timeout, as_json)


@plugin.command("promote")
@CLUSTER
@WAIT
@TIMEOUT
@target_options
def promote(target: Target, name: str, wait: bool, timeout: float, as_json: bool) -> None:
    """The same as `switchover` (CloudNativePG's name for it). Tidemark's replicas never
    open the volume, so the new writer is always a new writer pod, not a chosen replica."""
    _switchover(target, name, wait, timeout, as_json)


def _chaos_drives(target: Target) -> None:
    """cluster_chaos talks through the kubernetes client's default configuration (in-cluster,
    else $KUBECONFIG or ~/.kube/config at its current context), not through TARGET: refuse
    when --kubeconfig/--context chose another API server, so that no fault ever lands on a
    cluster the user did not name."""
    try:
        kube_namespace()  # loads that default configuration, as run_cluster_experiment will
    except ConfigException as exc:
        raise KubeError(f"chaos needs the default kubeconfig ($KUBECONFIG or ~/.kube/config): {exc}") from exc
    default, chosen = client.Configuration.get_default_copy().host, target.api.configuration.host
    if default != chosen:
        raise KubeError(f"chaos runs against the default kubeconfig's current context ({default}), not the "
                        f"--kubeconfig/--context given ({chosen}): select that cluster with $KUBECONFIG and "
                        "`kubectl config use-context` instead")


@plugin.command("chaos")
@CLUSTER
@click.argument("experiment", metavar="EXPERIMENT", type=click.Choice(sorted(EXPERIMENTS)))
@click.option("--seconds", type=click.FloatRange(min=1), default=None,
              help="How long the verifying workload writes; longer runs show a steady state before and "
                   "after the fault (default per experiment: "
                   + ", ".join(f"{name} {s:.0f}" for name, s in sorted(SECONDS.items())) + ").")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write a PNG of the run here: commits/s, p99, healthy segments per PG, fault and repair "
                   "windows, the verdict (needs the plot extra: pip install 'tidemark[plot]').")
@target_options
def chaos(target: Target, name: str, experiment: str, seconds: float | None, plot: Path | None,
          as_json: bool) -> None:
    """Run chaos EXPERIMENT against AuroraCluster NAME on a kind cluster while a verifying
    workload Job writes through it, then check that it healed and lost nothing:

    \b
      kill-node         docker kill of a worker holding a storage pod; its segments are
                        rebuilt on the zone's spare pod (none: held down 30 s)
      kill-zone         docker kill of every worker of a zone, for 30 s
      restart-operator  the operator's pod deleted

    Killed workers are always started again; the workload's and the operator's workers
    are never killed. Needs the docker client, a storage-only cluster (spec.instances 0)
    that is Ready, and the default kubeconfig's current context. The same code as
    `tidemark chaos --cluster NAME EXPERIMENT`. Progress on stderr with --json. Exit
    status 0 when the cluster healed, commits went on during the fault and no
    acknowledged commit was lost, else 1."""
    _chaos_drives(target)
    target.cluster(name)  # a missing cluster: one line, before any Job is made
    run_on_cluster(experiment, name, target.namespace, seconds, plot, as_json)


def main() -> None:
    plugin(prog_name="kubectl tidemark", args=sys.argv[1:])


if __name__ == "__main__":
    main()
