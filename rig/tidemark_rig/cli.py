"""`tidemark dev`: the test rig by hand (binaries, control plane with kwok nodes, MinIO)."""

from __future__ import annotations

import sys

import click


@click.group()
def dev() -> None:
    """Developer tools: the container-free Kubernetes + MinIO test rig."""


@dev.command("install-bins")
@click.option("--only", multiple=True, help="Build only these (etcd, kubernetes, kwok, minio, mc, helm).")
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@click.option("--print-dir", is_flag=True, help="Only print the binaries' directory.")
def install_bins_cmd(only: tuple[str, ...], force: bool, print_dir: bool) -> None:
    """Build/cache the rig's pinned binaries (etcd, kube-*, kwok, minio, mc, helm)."""
    from .install_bins import InstallError, install
    from .versions import bin_dir

    if print_dir:
        click.echo(bin_dir() / "current")
        return
    try:
        install(only=list(only) or None, force=force)
    except InstallError as exc:
        click.echo(f"install-bins: {exc}", err=True)
        sys.exit(1)
