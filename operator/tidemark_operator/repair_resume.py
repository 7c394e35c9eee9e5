"""Repairs survive an operator restart.

The placement ConfigMap is the only record of a repair: a PG whose membership has
`next_members` is mid-replacement, and the target's `hydration` state in /v1/status says
how far the rebuild got. Every pass of the repair executor derives its next step from
those two alone, so a new operator process picks a repair up where the old one died
(create the target's segment, (re)start its hydration, finish the epoch). This module only
says so: the first pass of a process that finds a repair it did not begin emits a
`RepairResumed` event (what the process knows lives in the cluster's memo state).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from tidemark_protocol.quorum import Membership

from .repairs import hydration_state

Event = Callable[[str, str, str], None]


def note_found(known: dict[int, int], memberships: Mapping[int, Membership],
               statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> list[int]:
    """Emit RepairResumed for each in-progress repair this process has not seen yet
    (one it did not begin: the previous operator's). KNOWN (pg -> membership epoch of
    the dual step this process knows about) is updated. Returns those PGs."""
    found: list[int] = []
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
