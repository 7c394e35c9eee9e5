"""States of a segment's rebuild as the node reports them (`hydration.state` in
`/v1/status`) and the repairers (playground executor, operator) read them. The JSON
values are the wire format."""

from __future__ import annotations

from enum import StrEnum


class HydrationState(StrEnum):
    IDLE = "idle"  # nothing running, nothing finished since the segment was created
    SNAPSHOT = "snapshot"  # fetching the page snapshot from one source
    LOG = "log"  # fetching the log above the snapshot from several sources
    CATCHING_UP = "catching_up"  # pulling until the SCL reaches the peers'
    DONE = "done"
    FAILED = "failed"  # cancelled, interrupted by a restart, or no source could serve
    INSTALLING = "installing"  # a restore install is loading a page snapshot (install.py)


# A rebuild in progress (a second one is refused).
RUNNING = frozenset({HydrationState.SNAPSHOT, HydrationState.LOG, HydrationState.CATCHING_UP})
# The segment's base or backfill is still missing: gossip, GC and scrub leave it alone.
FETCHING = frozenset({HydrationState.SNAPSHOT, HydrationState.LOG})
