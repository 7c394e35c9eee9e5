"""Structured logs for every tidemark command: to stderr, so stdout stays for results
(tables, `--json`). JSON lines when stderr is not a terminal, readable text when it is."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure_logging() -> None:
    level = getattr(logging, os.environ.get("TIDEMARK_LOG_LEVEL", "INFO").upper(), logging.INFO)
    renderer = (
        structlog.dev.ConsoleRenderer(colors=False)
        if sys.stderr.isatty()
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
