"""Carry out one segment replacement (brief §5) against live nodes, step by step.

1. epoch+1: membership {A..E,F} ∪ {A..E,G}, saved in the placement (topology.json),
   then recorded in a write quorum of the PG's segments; G created and hydrated from
   the healthy members while it also receives new writes (the writer reloads the
   membership when a segment refuses its stale membership epoch).
2. once G's SCL has caught up with its peers': epoch+2, membership {A..E,G}, saved and
   recorded the same way; F's segment is deleted if F answers (fenced otherwise by its
   old membership epoch, and cleaned when it returns).
Each step is idempotent, so an interrupted repair can be resumed (resume_repair: a new
supervisor finds the dual membership in the placement and carries on from the target's
hydration state) or aborted.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

import aiohttp
import structlog

from tidemark_compute.topology import Topology
from tidemark_protocol.hydration import RUNNING, HydrationState
from tidemark_protocol.quorum import Membership, has_write_quorum
from tidemark_protocol.repair import RepairAction

log = structlog.get_logger("tidemark.repair")

SavePlacement = Callable[[int, Membership, Membership], Awaitable[None]]  # CAS: pg, old, new


HYDRATE_ATTEMPTS = 3
# Called with a step's name right after it is durable ("after-begin", "after-finish"):
# the narrowest windows of a repair. Empty in production; tests append an observer that
# kills the process there (tests/process/crashing_supervisor.py).
STEP_OBSERVERS: list[Callable[[str], None]] = []


class RepairStep(StrEnum):
    """Where a repair stands (`tidemark playground status`, repairs.json)."""

    PLANNED = "planned"
    DUAL_MEMBERSHIP = "dual-membership"
    HYDRATING = "hydrating"
    FINALIZING = "finalizing"
    FENCING = "fencing"
    DONE = "done"
    FAILED = "failed"


class RepairFailed(Exception):
    pass


def step_done(name: str) -> None:
    for observe in STEP_OBSERVERS:
        observe(name)


@dataclass
class RepairProgress:
    pg: int
    lost: str
    target: str
    step: RepairStep = RepairStep.PLANNED
    pct: float = 0.0
    started: float = field(default_factory=time.time)
    finished: float | None = None
    error: str | None = None
    resumed: bool = False  # found half-done in the placement by a new supervisor

    def to_json(self) -> dict:
        return {
            "pg": self.pg, "lost": self.lost, "target": self.target, "step": self.step,
            "pct": round(self.pct, 1), "started": self.started, "finished": self.finished,
            "error": self.error, "resumed": self.resumed,
        }  # fmt: skip


async def put_segment(
    session: aiohttp.ClientSession, topology: Topology, node: str, pg: int, membership: Membership
) -> bool:
    body = {
        "layout": topology.layout.to_json(),
        "membership": membership.to_json(),
        "peers": {m: topology.nodes[m] for m in membership.all_members},
        "volume_epoch": topology.volume_epoch,
    }
    try:
        async with session.put(f"{topology.nodes[node]}/v1/segments/{pg}", json=body) as resp:
            return resp.status < 300
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False


async def record_membership(
    session: aiohttp.ClientSession, topology: Topology, pg: int, membership: Membership, deadline: float
) -> None:
    """Tell every member the new membership; done once a write quorum of each set has it."""
    done: set[str] = set()
    while True:
        pending = [m for m in membership.all_members if m not in done]
        results = await asyncio.gather(
            *(put_segment(session, topology, m, pg, membership) for m in pending)
        )
        done.update(m for m, ok in zip(pending, results, strict=True) if ok)
        if has_write_quorum(membership, done):
            return
        if time.monotonic() > deadline:
            raise RepairFailed(f"pg {pg}: membership epoch {membership.epoch} reached only {sorted(done)}")
        await asyncio.sleep(0.3)


async def _segment_status(session: aiohttp.ClientSession, url: str, pg: int) -> dict | None:
    try:
        async with session.get(f"{url}/v1/status") as resp:
            if resp.status != 200:
                return None
            data = await resp.json()
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None
    return next((s for s in data.get("segments", []) if s["pg"] == pg), None)


async def execute_repair(
    session: aiohttp.ClientSession,
    topology: Topology,
    action: RepairAction,
    save: SavePlacement,
    progress: RepairProgress,
    bandwidth: int = 0,
    timeout: float = 600.0,
) -> Membership:
    deadline = time.monotonic() + timeout
    pg = action.pg
    current = topology.memberships[pg]
    dual = current.begin_replace(action.lost, action.target)
    progress.step = RepairStep.DUAL_MEMBERSHIP
    await save(pg, current, dual)
    step_done("after-begin")
    topology.memberships[pg] = dual
    return await _finish_from_dual(session, topology, action, dual, save, progress, bandwidth, deadline)


async def resume_repair(
    session: aiohttp.ClientSession,
    topology: Topology,
    pg: int,
    healthy: set[str],
    save: SavePlacement,
    progress: RepairProgress,
    bandwidth: int = 0,
    timeout: float = 600.0,
) -> Membership:
    """Finish a replacement found half-done in the placement (the supervisor that began
    it died). Every step is idempotent, and the target's own status says where the
    rebuild stands, so it simply continues: (re)create and record the dual membership,
    hydrate unless already running or done, finalize."""
    dual = topology.memberships[pg]
    if dual.next_members is None:
        raise RepairFailed(f"pg {pg}: no replacement in progress")
    (target,) = set(dual.next_members) - set(dual.members)
    (lost,) = set(dual.members) - set(dual.next_members)
    sources = tuple(s for s in dual.members if s in dual.next_members and s in healthy)
    if not sources:
        raise RepairFailed(f"pg {pg}: no healthy source to rebuild {target} from")
    action = RepairAction(pg, lost, target, sources)
    return await _finish_from_dual(session, topology, action, dual, save, progress, bandwidth,
                                   time.monotonic() + timeout)


async def _finish_from_dual(
    session: aiohttp.ClientSession,
    topology: Topology,
    action: RepairAction,
    dual: Membership,
    save: SavePlacement,
    progress: RepairProgress,
    bandwidth: int,
    deadline: float,
) -> Membership:
    pg = action.pg
    if not await put_segment(session, topology, action.target, pg, dual):
        raise RepairFailed(f"pg {pg}: could not create the segment on {action.target}")
    await record_membership(session, topology, pg, dual, deadline)

    progress.step = RepairStep.HYDRATING
    sources = {s: topology.nodes[s] for s in action.sources}
    seg = await _segment_status(session, topology.nodes[action.target], pg)
    state = HydrationState(((seg or {}).get("hydration") or {}).get("state", "idle"))
    if state not in RUNNING and state != HydrationState.DONE:  # a fresh segment, or a rebuild cut short
        await _start_hydration(session, topology, action, sources, bandwidth)
    await _wait_caught_up(session, topology, action, progress, deadline,
                          lambda: _start_hydration(session, topology, action, sources, bandwidth))

    final = dual.finish_replace()
    progress.step = RepairStep.FINALIZING
    await save(pg, dual, final)
    step_done("after-finish")
    topology.memberships[pg] = final
    await record_membership(session, topology, pg, final, deadline)
    progress.step = RepairStep.FENCING
    await fence_stale_segment(session, topology.nodes.get(action.lost), pg)
    progress.step = RepairStep.DONE
    progress.pct = 100.0
    progress.finished = time.time()
    return final


async def _start_hydration(
    session: aiohttp.ClientSession, topology: Topology, action: RepairAction, sources: dict[str, str],
    bandwidth: int,
) -> None:
    async with session.post(
        f"{topology.nodes[action.target]}/v1/segments/{action.pg}/hydrate",
        json={"sources": sources, "bandwidth_bytes_per_s": bandwidth},
    ) as resp:
        if resp.status == 409:
            return  # already hydrating (asked twice): that one goes on
        if resp.status >= 300:
            raise RepairFailed(f"pg {action.pg}: hydrate on {action.target}: {await resp.text()}")


async def _wait_caught_up(
    session: aiohttp.ClientSession,
    topology: Topology,
    action: RepairAction,
    progress: RepairProgress,
    deadline: float,
    rehydrate: Callable[[], Awaitable[None]],
) -> None:
    """G has caught up when its hydration is done and its SCL reaches the highest SCL
    its peers had when we last looked (new writes keep arriving at both). A hydration
    that failed (e.g. cut short by a restart of G's node) is started again, a few times."""
    pg = action.pg
    earlier_peer_scl: int | None = None
    attempts = 1
    while True:
        peers = await asyncio.gather(
            *(_segment_status(session, topology.nodes[s], pg) for s in action.sources)
        )
        peer_scl = max((p["scl"] for p in peers if p), default=0)
        target = await _segment_status(session, topology.nodes[action.target], pg)
        if target is not None:
            hydration = target.get("hydration") or {}
            progress.pct = float(hydration.get("pct", 0.0))
            state = HydrationState(hydration.get("state", "done"))
            if state in (HydrationState.FAILED, HydrationState.IDLE):  # idle: its node restarted before or after the rebuild
                if attempts >= HYDRATE_ATTEMPTS:
                    raise RepairFailed(f"pg {pg}: hydration failed: {hydration.get('error')}")
                attempts += 1
                log.warning("hydration_restart", pg=pg, target=action.target, error=hydration.get("error"))
                await rehydrate()
                earlier_peer_scl = None
                continue
            # Compare with what the peers had one poll ago: under load they keep moving.
            if state == HydrationState.DONE and earlier_peer_scl is not None and target["scl"] >= earlier_peer_scl:
                return
        earlier_peer_scl = peer_scl
        if time.monotonic() > deadline:
            raise RepairFailed(f"pg {pg}: {action.target} did not catch up in time")
        await asyncio.sleep(0.3)


async def fence_stale_segment(session: aiohttp.ClientSession, url: str | None, pg: int) -> bool:
    """Drop a replaced segment from its (returned) node; False if the node is away."""
    if url is None:
        return False
    try:
        async with session.delete(f"{url}/v1/segments/{pg}") as resp:
            return resp.status < 300 or resp.status == 404
    except (TimeoutError, aiohttp.ClientError, OSError):
        return False
