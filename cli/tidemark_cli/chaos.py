"""`tidemark chaos`: the playground's experiments on a fresh local fleet, or, with
`--cluster NAME`, the kind cluster's against an AuroraCluster (cluster_chaos.py). One
command: the playground's options and behaviour are taken as they are."""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from tidemark_playground import chaos as playground_chaos

from . import cluster_chaos
from .chaos_plot import plot_cluster_run

PLAYGROUND = playground_chaos.chaos


def run_on_cluster(experiment: str, cluster: str, namespace: str | None, seconds: float | None,
                   plot: Path | None, as_json: bool) -> None:
    if experiment not in cluster_chaos.EXPERIMENTS:
        raise click.UsageError(f"--cluster runs {', '.join(sorted(cluster_chaos.EXPERIMENTS))}; "
                               f"{experiment} is a playground experiment")
    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise click.ClickException("--plot needs matplotlib: pip install 'tidemark[plot]'")
    console = Console(highlight=False, soft_wrap=True, file=sys.stderr if as_json else None)
    run, result = cluster_chaos.run_cluster_experiment(experiment, cluster, namespace, seconds, console)
    if plot is not None:
        plot_cluster_run(run, result, plot)
        console.print(f"plot written to {plot}")
    result["plot"] = str(plot) if plot else None
    if as_json:
        click.echo(json.dumps(result))
    else:
        verdict = "OK" if result["ok"] else "FAILED"
        console.print(f"{verdict}: healed {result['healed']}, {result['acked']} acknowledged, {result['lost']} lost")
    raise SystemExit(0 if result["ok"] else 1)


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
