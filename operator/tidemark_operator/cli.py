"""`tidemark operator run`: the kopf operator, standalone."""

from __future__ import annotations

import os

import click


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
@click.option("--node-command", default=None,
              help="Command that starts a storage node in the pods (default: `tidemark`).")
@click.option("--interval", type=float, default=None, help="Health observation interval (s).")
def run(namespaces: tuple[str, ...], all_namespaces: bool, kubeconfig: str | None,
        liveness: str, metrics_port: int, node_command: str | None, interval: float | None) -> None:
    """Run the operator until interrupted."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace (one or more) or --all-namespaces")
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig
    if node_command:
        os.environ["TIDEMARK_NODE_COMMAND"] = node_command
    if interval:
        os.environ["TIDEMARK_OPERATOR_INTERVAL"] = str(interval)
    import kopf

    from . import handlers, metrics

    if metrics_port:
        metrics.serve(metrics_port)
    assert handlers  # registers the handlers
    kopf.configure(verbose=False)
    kopf.run(
        standalone=True,
        clusterwide=all_namespaces,
        namespaces=list(namespaces) or None,
        liveness_endpoint=liveness or None,
    )
