"""`tidemark dev`: the test rig by hand (binaries, control plane with kwok nodes, MinIO)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from .control_plane import ClusterConfig, ControlPlane, load_state
from .install_bins import InstallError, install
from .kind import cli as kind_cli
from .minio import MinioServer
from .procs import RigError
from .versions import bin_dir

DEFAULT_DIR = ".tidemark-rig"


@click.group()
def dev() -> None:
    """Developer tools: the container-free Kubernetes + MinIO test rig."""


@dev.command("install-bins")
@click.option("--only", multiple=True,
              help="Build only these groups (etcd, kubernetes, kwok, minio, mc, helm; "
                   "optional, built only when named: promtool).")
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@click.option("--print-dir", is_flag=True, help="Only print the directory of stable links.")
def install_bins_cmd(only: tuple[str, ...], force: bool, print_dir: bool) -> None:
    """Build/cache the rig's pinned binaries (etcd, kube-*, kwok, minio, mc, helm)."""

    if print_dir:
        click.echo(bin_dir() / "current")
        return
    try:
        install(only=list(only) or None, force=force)
    except InstallError as exc:
        click.echo(f"install-bins: {exc}", err=True)
        sys.exit(1)


@dev.group()
def cluster() -> None:
    """A control plane with kwok nodes in zones, a pod runner and MinIO, by hand."""


_dir_opt = click.option("--dir", "rig_dir", default=DEFAULT_DIR, show_default=True,
                        type=click.Path(file_okay=False, path_type=Path),
                        help="Rig directory (state, certificates, logs, data).")


@cluster.command("up")
@_dir_opt
@click.option("--zones", default="zone-a,zone-b,zone-c", show_default=True,
              help="Comma-separated zone names.")
@click.option("--nodes-per-zone", default=2, show_default=True, type=click.IntRange(1, 50))
@click.option("--minio/--no-minio", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the cluster state as JSON.")
def cluster_up(rig_dir: Path, zones: str, nodes_per_zone: int, minio: bool, as_json: bool) -> None:
    """Start the rig in DIR and return once nodes are Ready (processes keep running)."""
    from rich.console import Console


    console = Console(stderr=True)
    if load_state(rig_dir) is not None and (rig_dir / "pids.json").exists():
        cp = ControlPlane(rig_dir)
        if cp.procs.procs and all(p.alive() for p in cp.procs.procs.values()):
            raise click.ClickException(f"a rig is already running in {rig_dir}; "
                                       "`tidemark dev cluster down` first")
        cp.down(quiet=True)
    cfg = ClusterConfig(zones=[z.strip() for z in zones.split(",") if z.strip()],
                        nodes_per_zone=nodes_per_zone)
    cp = ControlPlane(rig_dir, cfg)
    try:
        state = cp.up(log=lambda s: console.print(f"[bold]•[/] {s}"))
        out: dict[str, object] = {"cluster": state.__dict__}
        if minio:
            console.print("[bold]•[/] starting MinIO")
            server = MinioServer(rig_dir, procs=cp.procs)
            secs = server.start()
            info = server.make_bucket("tidemark")
            out["minio"] = info.__dict__
            console.print(f"[bold]•[/] MinIO up in {secs:.1f}s")
    except RigError as exc:
        cp.down(quiet=True)
        raise click.ClickException(str(exc)) from exc
    (rig_dir / "rig.json").write_text(json.dumps(out, indent=1))
    if as_json:
        click.echo(json.dumps(out, indent=1))
        return
    click.echo(f"kubeconfig: {state.kubeconfig}")
    click.echo(f"  export KUBECONFIG={state.kubeconfig}")
    click.echo(f"nodes: {', '.join(n['name'] + ' (' + n['zone'] + ')' for n in state.nodes)}")
    if minio:
        m = out["minio"]
        assert isinstance(m, dict)
        click.echo(f"minio: {m['endpoint']} bucket={m['bucket']} "
                   f"access_key={m['access_key']} secret_key={m['secret_key']}")
    click.echo(f"logs: {rig_dir.resolve() / 'logs'}; stop with: tidemark dev cluster down --dir {rig_dir}")


@cluster.command("down")
@_dir_opt
def cluster_down(rig_dir: Path) -> None:
    """Kill every process the rig in DIR started and check no listener is left."""

    if not (rig_dir / "pids.json").exists():
        click.echo(f"no rig in {rig_dir}")
        return
    t0 = time.monotonic()
    ControlPlane(rig_dir).down()
    click.echo(f"rig in {rig_dir} stopped in {time.monotonic() - t0:.1f}s")


@cluster.command("kubeconfig")
@_dir_opt
def cluster_kubeconfig(rig_dir: Path) -> None:
    """Print the path of the rig's admin kubeconfig."""

    state = load_state(rig_dir)
    if state is None:
        raise click.ClickException(f"no rig in {rig_dir}; `tidemark dev cluster up` first")
    click.echo(state.kubeconfig)


dev.add_command(kind_cli.kind)
