"""`tidemark operator run`: the kopf operator, standalone."""

from __future__ import annotations

import shlex

import click
import kopf

from . import handlers, metrics
from .reconcile import Settings


@click.group()
def operator() -> None:
    """The Kubernetes operator for AuroraCluster resources."""


@operator.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch this namespace (repeatable).")
@click.option("--all-namespaces", "-A", is_flag=True, help="Watch the whole cluster.")
@click.option("--kubeconfig", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Kubeconfig (default: in-cluster, then $KUBECONFIG / ~/.kube/config).")
@click.option("--liveness", default="http://0.0.0.0:8080/healthz", show_default=True,
              help="kopf liveness endpoint URL ('' to disable).")
@click.option("--metrics-port", type=int, default=9090, show_default=True,
              help="Prometheus metrics port (0 to disable).")
@click.option("--node-command", default="tidemark", show_default=True,
              help="Command that starts a storage node in the pods.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=3.0, show_default=True,
              help="Health observation interval (s).")
def run(namespaces: tuple[str, ...], all_namespaces: bool, kubeconfig: str | None,
        liveness: str, metrics_port: int, node_command: str, interval: float) -> None:
    """Run the operator until interrupted."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace (one or more) or --all-namespaces")
    if metrics_port:
        metrics.serve(metrics_port)
    kopf.configure(verbose=False)
    kopf.run(
        registry=handlers.build_registry(interval),
        memo=kopf.Memo(settings=Settings(node_command=tuple(shlex.split(node_command)), kubeconfig=kubeconfig)),
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces) or None,
        liveness_endpoint=liveness or None,
    )
