"""`tidemark dev kind up|down|kubeconfig`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console

from ..procs import RigError
from . import cluster
from .up import DEFAULT_NAME, StepFailed, down, up

_name = click.option("--name", default=DEFAULT_NAME, show_default=True, help="kind cluster name.")


def _repo() -> Path:
    """The repository the command runs in: kind-config.yaml, the Dockerfile and the chart."""
    here = Path.cwd()
    for d in (here, *here.parents):
        if (d / "kind-config.yaml").exists() and (d / "charts" / "tidemark").is_dir():
            return d
    raise click.ClickException("run this inside the Tidemark repository (kind-config.yaml, charts/tidemark)")


def _fail(as_json: bool, message: str) -> None:
    click.echo(json.dumps({"error": message}) if as_json else f"tidemark dev kind: {message}",
               err=not as_json)
    sys.exit(1)


@click.group("kind")
def kind() -> None:
    """A real kind cluster with three zones, built offline, with Tidemark installed."""


@kind.command("up")
@_name
@click.option("--image-tag", default=None, help="Tag of the Tidemark image (default tidemark:<version>, "
                                                 "the chart's default).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def up_cmd(name: str, image_tag: str | None, as_json: bool) -> None:
    """Engine, egress guard, node image, cluster from kind-config.yaml, image, chart."""
    repo = _repo()
    try:
        result = up(name, repo, Console(stderr=True), image_tag)
    except (StepFailed, RigError) as exc:
        _fail(as_json, str(exc))
    if as_json:
        click.echo(json.dumps(result, indent=1))
    else:
        click.echo(f"export KUBECONFIG={result['kubeconfig']}")


@kind.command("down")
@_name
@click.option("--stop-engine", is_flag=True, help="Also stop the Docker engine if `kind up` started it.")
@click.option("--json", "as_json", is_flag=True)
def down_cmd(name: str, stop_engine: bool, as_json: bool) -> None:
    """Delete the kind cluster (its node containers and kubeconfig); images stay cached."""
    try:
        result = down(name, stop_engine)
    except RigError as exc:
        _fail(as_json, str(exc))
    click.echo(json.dumps(result) if as_json else
               f"cluster {name}: {'deleted' if result['deleted'] else 'not found'}")


@kind.command("kubeconfig")
@_name
def kubeconfig_cmd(name: str) -> None:
    """Print the path of the cluster's kubeconfig."""
    path = cluster.kubeconfig_path(name)
    if not path.exists():
        _fail(False, f"no kind cluster {name} made by `tidemark dev kind up`")
    click.echo(path)
