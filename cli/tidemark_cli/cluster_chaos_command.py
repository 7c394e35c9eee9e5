"""What `tidemark chaos --cluster NAME EXPERIMENT` and `kubectl tidemark chaos NAME
EXPERIMENT` both do once their options are parsed: run the experiment of cluster_chaos.py,
plot it, print the verdict (or the JSON document) and exit with it. A module of its own so
that the plugin does not import the playground's chaos (about 0.2 s on every command)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import click
from rich.console import Console

from . import cluster_chaos
from .chaos_plot import plot_cluster_run


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
