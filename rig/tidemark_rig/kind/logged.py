"""Run one tool with its command line and output appended to a log; bounded; one-line errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ..procs import RigError


def run(argv: list[str], log: Path, timeout: float, env: dict[str, str] | None = None,
        cwd: Path | None = None, stdin: str | None = None) -> str:
    """Return stdout; stderr goes to LOG. A failure or timeout names the tool and the log."""
    tool = Path(argv[0]).name
    with log.open("a") as fh:
        fh.write(f"\n$ {tool} {' '.join(argv[1:])}\n")
        fh.flush()
        try:
            done = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=fh, text=True,
                                  timeout=timeout, cwd=cwd, env=env)
        except subprocess.TimeoutExpired as exc:
            raise RigError(f"{tool} {argv[1]} timed out after {timeout:.0f}s; log: {log}") from exc
        fh.write(done.stdout)
    if done.returncode != 0:
        raise RigError(f"{tool} {' '.join(argv[1:4])} failed (exit {done.returncode}); log: {log}")
    return done.stdout
