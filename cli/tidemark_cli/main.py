"""The one `tidemark` command: each component contributes its own click group."""

from __future__ import annotations

import importlib

import click

from .errors import ReportingGroup
from .logging_setup import configure_logging, logging_options

# (subcommand name, "module:attribute") — imported lazily so that `tidemark --help`
# stays fast and a component's heavy imports are paid only when it is used.
SUBCOMMANDS: dict[str, str] = {
    "node": "tidemark_node.cli:node",
    "playground": "tidemark_playground.cli:playground",
    "workload": "tidemark_cli.workload:workload",
    "bench": "tidemark_cli.bench:bench",
    "dev": "tidemark_rig.cli:dev",
    "restore": "tidemark_playground.restore:restore",
    "snapshot": "tidemark_restore.cli:snapshot",
    "backup": "tidemark_restore.cli:backup",
    "operator": "tidemark_operator.cli:operator",
    "chaos": "tidemark_cli.chaos:chaos",
    "sql": "tidemark_cli.sql:sql",
}


class LazyGroup(ReportingGroup):
    """Subcommands imported on first use; every subcommand's user errors reported the one
    way of tidemark_cli.errors (one line, JSON with --json, exit 1)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(SUBCOMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in SUBCOMMANDS:
            module_name, attr = SUBCOMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup)
@click.version_option(package_name="tidemark")
@logging_options
def main(log_format: str, log_level: str) -> None:
    """Tidemark: an Aurora-style log-is-the-database storage fleet."""
    configure_logging(log_format, log_level)


if __name__ == "__main__":
    main()
