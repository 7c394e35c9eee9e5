"""Test-only launcher: `tidemark playground supervise` that dies on the spot (as a
SIGKILL would) right after the repair step named by its first argument.

    python crashing_supervisor.py STEP --dir DIR [supervise options]
"""

from __future__ import annotations

import os
import sys

from tidemark_playground import repair_executor
from tidemark_playground.cli import supervise

CRASH_EXIT = 70


def main() -> None:
    crash_at, args = sys.argv[1], sys.argv[2:]

    def crash(step: str) -> None:
        if step == crash_at:
            print(f"crash point {step}", flush=True)
            os._exit(CRASH_EXIT)

    repair_executor.STEP_OBSERVERS.append(crash)
    supervise.main(args, prog_name="crashing-supervisor")


if __name__ == "__main__":
    main()
