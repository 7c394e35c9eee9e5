"""Repairs survive an operator restart.

The placement ConfigMap is the only record of a repair: a PG whose membership has
`next_members` is mid-replacement, and the target's `hydration` state in /v1/status says
how far the rebuild got. Every pass of run_repairs/drive_hydration derives its next step
from those two alone, so a new operator process picks a repair up where the old one died
(create the target's segment, (re)start its hydration, finish the epoch). This module only
says so: the first pass of a process that finds a repair it did not begin emits a
`RepairResumed` event. It also holds a test-only crash point (the rig tests kill the
operator right after a placement write, the narrowest window of a repair).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tidemark_protocol.quorum import Membership

from .repairs import hydration_state

log = logging.getLogger("tidemark_operator")

Event = Callable[[str, str, str], None]
CRASH_ENV = "TIDEMARK_OPERATOR_CRASH_AT"  # test-only: "after-repair-begin" | "after-repair-finish"
CRASH_EXIT = 70

_GUARD = threading.Lock()
# (namespace, cluster) -> {pg: membership epoch of the dual step this process knows about}
_KNOWN: dict[tuple[str, str], dict[int, int]] = {}


def note_found(key: tuple[str, str], memberships: Mapping[int, Membership],
               statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> list[int]:
    """Emit RepairResumed for each in-progress repair this process has not seen yet
    (one it did not begin: the previous operator's). Returns those PGs."""
    found: list[int] = []
    with _GUARD:
        known = _KNOWN.setdefault(key, {})
        for pg, m in sorted(memberships.items()):
            if m.next_members is None:
                known.pop(pg, None)
                continue
            if known.get(pg) == m.epoch:
                continue
            known[pg] = m.epoch
            found.append(pg)
            new = sorted(set(m.next_members) - set(m.members))
            old = sorted(set(m.members) - set(m.next_members))
            states = {n: hydration_state(statuses.get(n), pg) or
                      ("no segment yet" if statuses.get(n) is not None else "pod down") for n in new}
            event("Normal", "RepairResumed",
                  f"pg {pg}: resuming the replacement of {'+'.join(old)} by {'+'.join(new)} at membership "
                  f"epoch {m.epoch} (hydration: {', '.join(f'{n} {s}' for n, s in states.items())})")
    return found


def note_begun(key: tuple[str, str], began: Mapping[int, int]) -> None:
    """Repairs this process began itself (pg -> dual epoch): nothing to resume there."""
    with _GUARD:
        _KNOWN.setdefault(key, {}).update(began)


def crash_point(name: str) -> None:
    """Die on the spot (as a SIGKILL would) when the test harness asked for NAME."""
    if os.environ.get(CRASH_ENV) == name:
        log.warning("crash point %s reached: exiting (test fault injection)", name)
        for h in logging.getLogger().handlers:
            h.flush()
        os._exit(CRASH_EXIT)
