"""`tidemark operator run`: the kopf operator, standalone or (`--peering`) one of several
peers of which one is active (ha.py)."""

from __future__ import annotations

import logging
import shlex

import click
import kopf
import structlog

from . import ha, handlers, metrics
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
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True, help="Least severe level logged (the operator's and kopf's logs).")
@click.option("--image", default=None,
              help="Image of the storage pods of an AuroraCluster whose spec names none; the chart "
                   "passes the operator's own image. Default: tidemark:<this version>.")
@click.option("--peering", "peering", default=None, metavar="NAME",
              help="Run as one of several replicas: join the kopf peering object NAME (a "
                   "ClusterKopfPeering with --all-namespaces, else a KopfPeering in each watched "
                   "namespace; created if missing, its CRD must exist) and work only while no "
                   "live peer has a higher "
                   "priority. Default: standalone, no peering.")
@click.option("--priority", type=int, default=None,
              help="Peering priority (with --peering; the highest live peer is active). "
                   "Default: from the start time, so the longest-running peer leads.")
@click.option("--own-namespace", envvar="POD_NAMESPACE", default=None, metavar="NS",
              help="The namespace the operator's own pods run in (the chart passes it, as $POD_NAMESPACE): "
                   "the clusters' NetworkPolicies admit the operator's pods from there only. Default: "
                   "operator pods of any namespace.")
def run(namespaces: tuple[str, ...], all_namespaces: bool, kubeconfig: str | None,
        liveness: str, metrics_port: int, node_command: str, interval: float, log_level: str,
        image: str | None, peering: str | None, priority: int | None, own_namespace: str | None) -> None:
    """Run the operator until interrupted."""
    if bool(namespaces) == all_namespaces:
        raise click.UsageError("give --namespace (one or more) or --all-namespaces")
    if priority is not None and not peering:
        raise click.UsageError("--priority needs --peering")
    if metrics_port:
        metrics.serve(metrics_port)
    level = getattr(logging, log_level.upper())
    kopf.configure(debug=level <= logging.DEBUG, verbose=False)
    logging.getLogger().setLevel(level)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
    kopf.run(
        registry=handlers.build_registry(interval),
        memo=kopf.Memo(settings=Settings(node_command=tuple(shlex.split(node_command)), kubeconfig=kubeconfig,
                                         operator_namespace=own_namespace or None,
                                         **({"default_image": image} if image else {})),
                       interval=interval, namespaces=list(namespaces)),
        # Standalone unless --peering: then mandatory peering (kopf's peering_name), which
        # starts the process paused until it has seen the peers, never working beside a
        # leader it has not noticed yet (kopf's optional auto-detected peering would).
        standalone=not peering,
        peering_name=peering or None,
        priority=(priority if priority is not None else ha.default_priority()) if peering else None,
        clusterwide=all_namespaces,
        namespaces=list(namespaces),  # kopf wants a collection, empty with --all-namespaces
        liveness_endpoint=liveness or None,
    )
