"""The playground's supervisor: watches node health and heals the fleet.

It runs as its own process (started by `playground up`), like the operator's timers in
Kubernetes: every tick it probes each node, asks the pure planner what to rebuild,
runs those replacements concurrently, cleans stale segments off nodes that come back
after their segments moved, and writes progress to DIR/repairs.json for `status`.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import structlog

from tidemark_compute.topology import Topology, load_topology, save_topology, topology_lock
from tidemark_protocol.quorum import Membership
from tidemark_protocol.repair import NodeHealth, RepairLimits, plan_repairs

from .fleet import Fleet
from .repair_executor import RepairFailed, RepairProgress, execute_repair, fence_stale_segment

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
        topology = load_topology(self.directory)
        health = await self.probe(session, fleet)
        now = time.monotonic()
        for name, ok in health.items():
            if ok:
                if name in self.unhealthy_since:
                    log.info("node_back", node=name)
                    await self._clean_returned(session, topology, name)
                self.unhealthy_since.pop(name, None)
            else:
                self.unhealthy_since.setdefault(name, now)
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
            self._tasks[action.pg] = asyncio.create_task(self._run(session, topology, action, progress))
        self._waiting = [w.__dict__ for w in plan.waiting]
        self._write_status()

    async def _run(self, session, topology: Topology, action, progress: RepairProgress) -> None:
        try:
            await execute_repair(
                session, topology, action, self.save_placement, progress,
                bandwidth=self.limits.bandwidth_bytes_per_s,
            )  # fmt: skip
            log.info("repair_done", pg=action.pg, target=action.target, seconds=round(time.time() - progress.started, 2))
        except (TimeoutError, RepairFailed, PlacementConflict, aiohttp.ClientError, OSError) as exc:
            progress.step = "failed"
            progress.error = str(exc)
            log.error("repair_failed", pg=action.pg, error=str(exc))
            await self._abort(action.pg)
        finally:
            self.history.append(progress.to_json())
            self.repairs.pop(action.pg, None)
            self._tasks.pop(action.pg, None)
            self._write_status()

    async def _abort(self, pg: int) -> None:
        """Step back from a dual membership whose new segment never caught up."""
        topology = load_topology(self.directory)
        current = topology.memberships[pg]
        if current.next_members is not None:
            try:
                await self.save_placement(pg, current, current.abort_replace())
            except PlacementConflict as exc:
                log.error("repair_abort_conflict", pg=pg, error=str(exc))

    async def _clean_returned(self, session, topology: Topology, node: str) -> None:
        """A node back after its segments moved keeps stale copies: fence and drop them."""
        try:
            async with session.get(f"{topology.nodes[node]}/v1/status") as resp:
                held = [s["pg"] for s in (await resp.json()).get("segments", [])]
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
            return
        for pg in held:
            if pg in topology.memberships and node not in topology.memberships[pg].all_members:
                if await fence_stale_segment(session, topology.nodes[node], pg):
                    log.info("stale_segment_dropped", node=node, pg=pg)

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
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
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
