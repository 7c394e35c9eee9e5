"""Structured logs for every tidemark command: to stderr, so stdout stays for results
(tables, `--json`). `--log-format auto` (the default) writes JSON lines when stderr is
not a terminal and readable text when it is; `json` and `text` choose one whatever
stderr is (a terminal user collecting JSON, a CI log read by people)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

import click
import structlog

LOG_FORMATS = ("auto", "json", "text")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(log_format: str = "auto", level: str = "info") -> None:
    as_text = sys.stderr.isatty() if log_format == "auto" else log_format == "text"
    renderer = structlog.dev.ConsoleRenderer(colors=False) if as_text else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def logging_options(group: Callable[..., Any]) -> Callable[..., Any]:
    """`--log-format` and `--log-level` of a top-level group (also from TIDEMARK_LOG_FORMAT
    and TIDEMARK_LOG_LEVEL, so a script sets them once for every command it runs)."""
    group = click.option("--log-level", type=click.Choice(LOG_LEVELS, case_sensitive=False), default="info",
                         show_default=True, envvar="TIDEMARK_LOG_LEVEL",
                         help="Least severe level logged on stderr.")(group)
    return click.option("--log-format", type=click.Choice(LOG_FORMATS), default="auto", show_default=True,
                        envvar="TIDEMARK_LOG_FORMAT",
                        help="Logs on stderr as JSON lines or readable text; auto: text on a terminal, "
                             "else JSON.")(group)
