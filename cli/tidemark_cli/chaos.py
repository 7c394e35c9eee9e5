"""`tidemark chaos`: the playground's experiments on a fresh local fleet, or, with
`--cluster NAME`, the kind cluster's against an AuroraCluster (cluster_chaos.py). One
command: the playground's options and behaviour are taken as they are."""

from __future__ import annotations

import inspect
from typing import Any

import click

from tidemark_playground import chaos as playground_chaos

from . import cluster_chaos
from .cluster_chaos_command import run_on_cluster

PLAYGROUND = playground_chaos.chaos


def _callback(**kw: Any) -> None:
    cluster, namespace = kw.pop("cluster"), kw.pop("namespace")
    if cluster is None:
        if kw["experiment"] not in playground_chaos.EXPERIMENTS:
            raise click.UsageError(f"{kw['experiment']} runs against a cluster: add --cluster NAME")
        if "seconds" not in {p.name for p in PLAYGROUND.params}:
            kw.pop("seconds")
        PLAYGROUND.callback(**kw)
        return
    run_on_cluster(kw["experiment"], cluster, namespace, kw.get("seconds"), kw.get("plot"), kw.get("as_json", False))


def _params() -> list[click.Parameter]:
    names = sorted(set(playground_chaos.EXPERIMENTS) | set(cluster_chaos.EXPERIMENTS))
    params: list[click.Parameter] = [click.Argument(["experiment"], type=click.Choice(names))]
    params += [p for p in PLAYGROUND.params if p.name != "experiment"]
    params.append(click.Option(["--cluster"], default=None, metavar="NAME",
                               help="Run against the AuroraCluster NAME on a kind cluster (current kubeconfig): "
                                    f"{', '.join(sorted(cluster_chaos.EXPERIMENTS))}; the workload runs as a Job."))
    params.append(click.Option(["--namespace"], default=None, help="Namespace of --cluster (default: the context's)."))
    if "seconds" not in {p.name for p in PLAYGROUND.params}:
        params.append(click.Option(["--seconds"], type=float, default=None,
                                   help="With --cluster: how long the workload writes (default per experiment)."))
    return params


chaos = click.Command(
    "chaos", callback=_callback, params=_params(),
    help=inspect.cleandoc(PLAYGROUND.help or "") + "\n\nWith --cluster NAME: kill-node (docker kill of a worker holding a storage "
    "pod; rebuilt on the zone's spare), kill-zone (every worker of a zone for 30 s) or restart-operator, against "
    "an AuroraCluster on a kind cluster; the same verdict, summary keys and --plot.")
