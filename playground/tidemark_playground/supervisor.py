"""The playground's supervisor: watches node health and heals the fleet.

It runs as its own process (started by `playground up`), like the operator's timers in
Kubernetes: every tick it probes each node, asks the pure planner what to rebuild,
runs those replacements concurrently, cleans stale segments off nodes that come back
after their segments moved, and writes progress to DIR/repairs.json for `status`.
It also restarts a database instance whose process died, at most once per
`instance_backoff` seconds each. That is the failover: a new writer process runs
Writer.open (recovery + seal, which fences the old one) and claims DIR/writer.json,
where the replicas find its feed again; a replica restarted follows the writer.
It keeps no state a restart would need: a replacement it died in the middle of is a
dual membership in topology.json, which the next supervisor finishes (resume_repair).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp
import structlog

from tidemark_compute.topology import Topology, load_topology, save_topology, topology_lock
from tidemark_protocol.node_auth import Role
from tidemark_protocol.quorum import Membership
from tidemark_protocol.repair import NodeHealth, RepairLimits, plan_repairs

from .fleet import Fleet, state_of
from .repair_executor import (
    RepairFailed,
    RepairProgress,
    RepairStep,
    execute_repair,
    fence_stale_segment,
    put_segment,
    resume_repair,
)

log = structlog.get_logger("tidemark.supervisor")
REPAIRS_FILE = "repairs.json"


class PlacementConflict(Exception):
    pass


@dataclass
class Supervisor:
    directory: Path
    limits: RepairLimits
    tick: float = 0.5
    unhealthy_since: dict[str, float] = field(default_factory=dict)
    repairs: dict[int, RepairProgress] = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    _tasks: dict[int, asyncio.Task] = field(default_factory=dict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _swept: bool = False  # the first tick after a (re)start cleans every node once
    sweep_every: float = 10.0  # then every node again this often: a DELETE that failed is retried
    _last_sweep: float = 0.0
    instance_backoff: float = 3.0  # a writer that cannot open (no quorum) is not restarted in a tight loop
    _instance_restarts: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # `status` keeps showing what earlier supervisors of this fleet did
        self.history = self.history or read_repairs(self.directory).get("history", [])[-50:]

    async def save_placement(self, pg: int, old: Membership, new: Membership) -> None:
        """Compare-and-swap on the placement file: refuse if someone else moved the PG."""
        async with self._lock:
            with topology_lock(self.directory):
                topology = load_topology(self.directory)
                if topology.memberships[pg] != old:
                    raise PlacementConflict(
                        f"pg {pg}: placement changed under us ({topology.memberships[pg]})"
                    )
                topology.memberships[pg] = new
                save_topology(self.directory, topology)

    async def probe(self, session: aiohttp.ClientSession, fleet: Fleet) -> dict[str, bool]:
        async def ready(url: str) -> bool:
            try:
                async with session.get(f"{url}/readyz") as resp:
                    return resp.status == 200
            except (TimeoutError, aiohttp.ClientError, OSError):
                return False

        names = list(fleet.nodes)
        results = await asyncio.gather(*(ready(fleet.nodes[n].url) for n in names))
        return dict(zip(names, results, strict=True))

    async def step(self, session: aiohttp.ClientSession) -> None:
        fleet = Fleet.load(self.directory)
        await self._restart_instances(fleet)
        topology = load_topology(self.directory)
        health = await self.probe(session, fleet)
        now = time.monotonic()
        for name, ok in health.items():
            if ok:
                if name in self.unhealthy_since:
                    log.info("node_back", node=name)
                    await self._clean_returned(session, topology, name, skip=set(self._tasks))
                self.unhealthy_since.pop(name, None)
            else:
                self.unhealthy_since.setdefault(name, now)
        if not self._swept:
            # A previous supervisor may have died between a placement write and what
            # follows it (recording it on the segments, dropping a replaced copy or an
            # aborted target), or a node may have come back while none was watching.
            for name, ok in health.items():
                if ok:
                    await self._clean_returned(session, topology, name, record=True)
            self._swept, self._last_sweep = True, now
        elif now - self._last_sweep >= self.sweep_every:
            # A stale copy whose DELETE failed (node busy, connection reset) stays
            # until someone asks again: the simulator found both cases (tests/sim).
            # PGs with a repair task in flight are left alone: the task may have just
            # created its target's segment, which `topology` (read above) predates.
            busy = set(self._tasks)
            for name, ok in health.items():
                if ok:
                    await self._clean_returned(session, topology, name, skip=busy)
            self._last_sweep = now
        self._resume_unfinished(session, topology, {n for n, ok in health.items() if ok})
        nodes = {
            n: NodeHealth(n, fleet.nodes[n].zone, health[n], self.unhealthy_since.get(n))
            for n in fleet.nodes
        }
        plan = plan_repairs(topology.memberships, nodes, now, self.limits)
        for action in plan.start:
            if action.pg in self._tasks:
                continue
            progress = RepairProgress(action.pg, action.lost, action.target)
            self.repairs[action.pg] = progress
            log.info("repair_start", pg=action.pg, lost=action.lost, target=action.target, sources=action.sources)
            repair = execute_repair(session, topology, action, self.save_placement, progress,
                                    bandwidth=self.limits.bandwidth_bytes_per_s)
            self._tasks[action.pg] = asyncio.create_task(self._run(session, action.pg, progress, repair))
        self._waiting = [asdict(w) for w in plan.waiting]  # slotted dataclasses: no __dict__
        self._write_status()

    async def _restart_instances(self, fleet: Fleet) -> None:
        now = time.monotonic()
        due = [n for n, inst in fleet.instances.items()
               if state_of(inst) == "dead" and now - self._instance_restarts.get(n, -1e9) >= self.instance_backoff]
        if not due:
            return
        previous = {n: inst.pid for n, inst in fleet.instances.items()}
        # blocking: the fleet lock (a CLI `restart` may hold it for a moment) and fork/exec
        started = await asyncio.to_thread(fleet.restart_dead_instances)
        for name in started:
            self._instance_restarts[name] = now
            log.info("instance_restarted", instance=name, pid=fleet.instances[name].pid,
                     previous_pid=previous.get(name))

    def _resume_unfinished(self, session, topology: Topology, healthy: set[str]) -> None:
        """A dual membership in the placement that no task of ours drives was left by a
        supervisor that died mid-repair (or by an abort that lost a race): finish it."""
        for pg, m in sorted(topology.memberships.items()):
            if m.next_members is None or pg in self._tasks:
                continue
            new = [x for x in m.next_members if x not in m.members]
            old = [x for x in m.members if x not in m.next_members]
            progress = RepairProgress(pg, old[0] if old else "", new[0] if new else "", resumed=True)
            self.repairs[pg] = progress
            log.info("repair_resume", pg=pg, lost=progress.lost, target=progress.target, epoch=m.epoch)
            own = Topology.from_json(topology.to_json())  # the task updates its copy as it goes
            repair = resume_repair(session, own, pg, healthy, self.save_placement, progress,
                                   bandwidth=self.limits.bandwidth_bytes_per_s)
            self._tasks[pg] = asyncio.create_task(self._run(session, pg, progress, repair))

    async def _run(self, session: aiohttp.ClientSession, pg: int, progress: RepairProgress,
                   repair: Awaitable[Membership]) -> None:
        try:
            await repair
            log.info("repair_done", pg=pg, target=progress.target, resumed=progress.resumed,
                     seconds=round(time.time() - progress.started, 2))
        except (TimeoutError, RepairFailed, PlacementConflict, aiohttp.ClientError, OSError) as exc:
            progress.step = RepairStep.FAILED
            progress.error = str(exc)
            log.error("repair_failed", pg=pg, error=str(exc))
            await self._abort(session, pg, progress.target)
        finally:
            self.history.append(progress.to_json())
            self.repairs.pop(pg, None)
            self._tasks.pop(pg, None)
            self._write_status()

    async def _abort(self, session: aiohttp.ClientSession, pg: int, target: str) -> None:
        """Step back from a dual membership whose new segment never caught up, and drop
        that half-built segment (if its node answers; else `_clean_returned` does once it
        is back)."""
        topology = load_topology(self.directory)
        current = topology.memberships[pg]
        if current.next_members is not None:
            try:
                await self.save_placement(pg, current, current.abort_replace())
            except PlacementConflict as exc:
                log.error("repair_abort_conflict", pg=pg, error=str(exc))
                return
            if target and target not in current.members and target in topology.nodes:
                await fence_stale_segment(session, topology.nodes[target], pg)

    async def _clean_returned(self, session, topology: Topology, node: str, record: bool = False,
                              skip: AbstractSet[int] = frozenset()) -> None:
        """A node back after its segments moved keeps stale copies: fence and drop them.
        With `record` (a supervisor's first pass) also give the node's segments their PG's
        current membership: a predecessor may have died between writing a placement
        step and recording it on the segments."""
        try:
            async with session.get(f"{topology.nodes[node]}/v1/status") as resp:
                held = [s["pg"] for s in (await resp.json()).get("segments", [])]
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return
        recorded = []
        for pg in held:
            m = topology.memberships.get(pg)
            if m is None or pg in skip:
                continue
            if node not in m.all_members:
                if await fence_stale_segment(session, topology.nodes[node], pg):
                    log.info("stale_segment_dropped", node=node, pg=pg)
            elif record and await put_segment(session, topology, node, pg, m):
                # Unconditionally: /v1/status shows the highest membership epoch the
                # segment has seen (writers' frames raise it too), not the member set
                # it was last given. The PUT is idempotent.
                recorded.append(pg)
        if recorded:
            log.info("memberships_recorded", node=node, pgs=recorded)

    def _write_status(self) -> None:
        data = {
            "in_progress": [p.to_json() for p in self.repairs.values()],
            "waiting": getattr(self, "_waiting", []),
            "history": self.history[-50:],
            "down": sorted(self.unhealthy_since),
        }
        path = self.directory / REPAIRS_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)

    async def run_forever(self, stop: asyncio.Event | None = None) -> None:
        topology = load_topology(self.directory)  # its token and CA, for every node call
        async with topology.session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=2)) as session:
            while not (stop and stop.is_set()):
                try:
                    await self.step(session)
                except (OSError, ValueError, KeyError) as exc:  # a file mid-write: next tick
                    log.warning("supervisor_step_failed", error=str(exc))
                await asyncio.sleep(self.tick)


def read_repairs(directory: Path) -> dict:
    path = directory / REPAIRS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"in_progress": [], "waiting": [], "history": [], "down": []}
