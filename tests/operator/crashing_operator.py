"""Test-only launcher: `tidemark operator ...` with a step observer that kills the process
at one named step, as a SIGKILL there would (no cleanup, exit status CRASH_EXIT).

    python tests/operator/crashing_operator.py after-repair-begin run -n NS ...

The operator announces its steps through tidemark_operator.steps.on_step (empty in
production); nothing in the operator reads a crash point."""

from __future__ import annotations

import logging
import os
import sys

from tidemark_cli.main import main
from tidemark_operator import steps

CRASH_EXIT = 70
STEPS = (steps.AFTER_REPAIR_BEGIN, steps.AFTER_REPAIR_FINISH)


def crash_at(name: str) -> None:
    if name not in STEPS:
        raise SystemExit(f"unknown step {name!r}; one of {', '.join(STEPS)}")

    def observer(step: str) -> None:
        if step == name:
            logging.getLogger("tidemark_operator").warning("step %s reached: exiting (test fault injection)", step)
            for h in logging.getLogger().handlers:
                h.flush()
            os._exit(CRASH_EXIT)

    steps.on_step.append(observer)


if __name__ == "__main__":
    crash_at(sys.argv[1])
    main(args=["operator", *sys.argv[2:]], prog_name="tidemark")
