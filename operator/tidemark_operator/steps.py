"""Named steps of the operator's work that observers may watch: `step(name)` calls every
function in `on_step` with the name (none in production). The repair executor announces
"after-repair-begin" and "after-repair-finish" right after the placement write that
begins or finishes a repair, the narrowest windows of a repair; the rig tests run the
operator through tests/operator/crashing_operator.py, which registers an observer that
kills the process at one of them."""

from __future__ import annotations

from collections.abc import Callable

AFTER_REPAIR_BEGIN = "after-repair-begin"
AFTER_REPAIR_FINISH = "after-repair-finish"

on_step: list[Callable[[str], None]] = []


def step(name: str) -> None:
    for observer in list(on_step):
        observer(name)
