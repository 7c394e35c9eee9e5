"""How every `tidemark` command reports what its user can fix: one line on stderr
(`Error: …`), a JSON `{"error": "…"}` object on stdout as well when the command line
has --json, exit status 1 (2 for a usage error, as click gives it). Never a traceback.
The conventions are documented in docs/cli.md."""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from tidemark_protocol.errors import UserError

# What a user can fix, whichever command raised it: a component's own errors are
# UserError subclasses (or get turned into one at its commands); a file, a port, an
# endpoint that cannot be reached is an OSError.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, OSError)


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def fail(message: str, as_json: bool, exit_code: int = 1) -> NoReturn:
    """Report MESSAGE the one way (see the module doc) and exit."""
    message = " ".join(message.split())
    if as_json:
        click.echo(json.dumps({"error": message}))
    click.echo(f"Error: {message}", err=True)
    raise SystemExit(exit_code)


def report_click_error(exc: click.ClickException, as_json: bool) -> None:
    """A click error (a bad option, a command's ClickException) is shown by click itself;
    with --json its message goes to stdout as a JSON error object first."""
    if as_json:
        click.echo(json.dumps({"error": " ".join(exc.format_message().split())}))


ARGS = "tidemark.args"  # ctx.meta key: the command line below the top-level group


class ReportingGroup(click.Group):
    """A top-level group (`tidemark`, `kubectl-tidemark`) that reports every subcommand's
    user errors the one way above (one line, JSON with --json, exit 1)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGS] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        as_json = "--json" in ctx.meta.get(ARGS, [])
        try:
            return super().invoke(ctx)
        except USER_ERRORS as exc:
            fail(one_line(exc), as_json)
        except click.ClickException as exc:
            report_click_error(exc, as_json)
            raise
