"""Segment rebuilds inside the deterministic simulation (see simulator.py).

Two halves, both driven by the simulator's one seeded RNG:

* `SimSupervisor` mirrors playground/tidemark_playground/supervisor.py +
  repair_executor.py: probe health, ask the real `plan_repairs` for targets, then walk
  one replacement per PG through dual membership (CAS on the placement, recorded in a
  write quorum of both sets) -> hydrate -> wait until caught up -> finalize (recorded in
  a write quorum) -> delete the replaced segment if its node answers. Its RPCs are
  request/response calls made at a tick: they fail if the node is down or the "network"
  loses them (sometimes after the node applied them). It can crash at any tick, losing
  everything it had in memory, and resumes from the durable state alone: the placement
  (`Sim.memberships`, the topology.json of the simulation) and the segments' epochs.
* Hydration runs on the target node (mirrors node/tidemark_node/hydration/): snapshot
  from one source (pages at a base B <= the source's VDL hint), re-base the chain at B
  (floor = SCL = B), fetch the log (B, T] in chunks from sources at the same volume
  epoch, then catch up with the most advanced peer. One chunk per event, so faults
  interleave; a crash of the target leaves the hydration `failed`.

On (re)start the simulated supervisor resumes in-progress changes from the placement
(`plan_repairs` skips a PG whose change is in progress, so nothing else would finish it;
the playground's `resume_repair` does the same). Deliberate deviations, each a gap of
the playground that would otherwise fail the end checks: a failed DELETE of a replaced
segment is retried (at the end of a change and when its node returns). See
docs/testing.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tidemark_protocol.pages import apply_redo
from tidemark_protocol.quorum import WRITE_QUORUM, Membership
from tidemark_protocol.repair import NodeHealth, RepairAction, RepairLimits, plan_repairs
from tidemark_protocol.segment import in_ranges

if TYPE_CHECKING:
    from simulator import Segment, Sim

RUNNING = ("snapshot", "log", "catching_up")
HYDRATE_ATTEMPTS = 3  # as playground/tidemark_playground/repair_executor.py


class PlacementConflict(Exception):
    pass


@dataclass
class Task:
    action: RepairAction
    step: str
    started: float
    earlier_peer_scl: int | None = None
    recorded: frozenset[str] = frozenset()
    attempts: int = 1


# --------------------------------------------------------------------------- node side
def start_hydration(seg: Segment, sources: tuple[str, ...]) -> bool:
    """POST /hydrate: False (409) while one runs."""
    if seg.hydration in RUNNING:
        return False
    seg.hydration = "snapshot"
    seg.hyd_sources = tuple(sources)
    seg.hyd_work = 0
    seg.persist([])
    return True


def hydration_work(sim: Sim, name: str, pg: int) -> None:
    """One unit of a running hydration on node `name` (which is up)."""
    seg = sim.nodes[name].segments[pg]
    seg.hyd_work += 1
    if seg.hyd_work > 60:
        _fail(sim, name, seg, "too slow")
        return
    live = [
        s
        for s in seg.hyd_sources
        if s != name and sim.nodes[s].up and pg in sim.nodes[s].segments
    ]
    if seg.hydration == "snapshot":
        if not live:
            _fail(sim, name, seg, "no source could serve a snapshot")
            return
        install_base(sim, seg, sim.nodes[sim.rng.choice(live)].segments[pg])
        seg.hydration = "log"
        usable = _same_epoch(sim, seg, live, seg.hyd_base)
        seg.hyd_target = min((sim.nodes[s].segments[pg].log.scl for s in usable), default=-1)
        seg.persist([])
        return
    if seg.hydration == "log":
        usable = _same_epoch(sim, seg, live, seg.hyd_base)
        if not usable or seg.hyd_target < 0:
            _fail(sim, name, seg, "no source answers at the segment's volume epoch")
            return
        if seg.log.scl < seg.hyd_target:
            _pull(sim, seg, sim.nodes[sim.rng.choice(usable)].segments[pg], seg.hyd_target)
        if seg.log.scl >= seg.hyd_target:
            seg.hydration = "catching_up"
            peers = [
                m
                for m in seg.membership.all_members
                if m != name and sim.nodes[m].up and pg in sim.nodes[m].segments
            ]
            peers = _same_epoch(sim, seg, peers, 0)
            seg.hyd_target = max((sim.nodes[p].segments[pg].log.scl for p in peers), default=0)
            seg.hyd_peers = tuple(peers)
            seg.persist([])
        return
    assert seg.hydration == "catching_up"
    peers = [p for p in seg.hyd_peers if sim.nodes[p].up and pg in sim.nodes[p].segments]
    if seg.log.scl < seg.hyd_target and peers:
        best = max(peers, key=lambda p: sim.nodes[p].segments[pg].log.scl)
        _pull(sim, seg, sim.nodes[best].segments[pg], seg.hyd_target)
    if seg.log.scl >= seg.hyd_target:
        seg.hydration = "done"
        seg.persist([])
        sim.stats["hydrations"] += 1
        sim.log.append(f"{name}/pg{pg} hydration done scl={seg.log.scl}")


def _same_epoch(sim: Sim, seg: Segment, names: list[str], min_scl: int) -> list[str]:
    pg = seg.pg
    return [
        s
        for s in names
        if sim.nodes[s].segments[pg].log.meta.volume_epoch == seg.log.meta.volume_epoch
        and sim.nodes[s].segments[pg].log.scl >= min_scl
    ]


def _fail(sim: Sim, name: str, seg: Segment, why: str) -> None:
    seg.hydration = "failed"
    seg.persist([])
    sim.log.append(f"{name}/pg{seg.pg} hydration failed: {why}")


def _pull(sim: Sim, seg: Segment, src: Segment, upto: int) -> None:
    """Fetch records (SCL, upto] from `src` in one chunk and ingest them like intake."""
    after = seg.log.scl
    offered = sorted((r for r in src.store.values() if after < r.lsn <= upto), key=lambda r: r.lsn)
    fresh = seg.log.accept(offered[: sim.rng.choice([5, 20, 80])])
    seg.persist(fresh)


def install_base(sim: Sim, seg: Segment, src: Segment) -> None:
    """Snapshot at a base B the source knows is durable (<= its VDL hint), then re-base
    the target's chain on it, as hydration/rebase.py install_base does (one atomic write)."""
    smeta = src.log.meta
    limit = min(smeta.scl, smeta.vdl_hint)
    chain_lsns = [lsn for lsn in sorted(src.store) if lsn <= limit and src.log.has(lsn)]
    if src.base_lsn and src.base_lsn <= limit:
        chain_lsns = [lsn for lsn in chain_lsns if lsn > src.base_lsn]
    # A materialized point somewhere at or below the limit (not always the newest).
    cands = [src.base_lsn] + chain_lsns if src.base_lsn else [0] + chain_lsns
    base = cands[-1] if sim.rng.random() < 0.6 else sim.rng.choice(cands)
    pages = dict(src.base_pages) if src.base_lsn and src.base_lsn <= base else {}
    lsns = set(src.base_lsns) if src.base_lsn and src.base_lsn <= base else set()
    size = sim.layout.page_size
    for lsn in chain_lsns:
        if lsn > base:
            break
        r = src.store[lsn]
        pages[r.page] = apply_redo(pages.get(r.page, b""), r, size)
        lsns.add(lsn)
    seg.hyd_base = base
    meta = seg.log.meta
    ranges = smeta.truncations
    if not sim.cfg.hydrate_applies_ranges:
        # Node hydration as of issue #5: the source's ranges recorded, the
        # records they void kept.
        meta.truncations.extend(r for r in smeta.truncations if r not in meta.truncations)
        ranges = []
    sim.log.append(f"pg{seg.pg} snapshot base={base} (target scl={meta.scl})")
    # The node's code (SegmentLog.rebase, what hydration and restore install call): the
    # source's ranges applied like a seal at the segment's own epoch, then the chain
    # re-based on the snapshot if its base is above the SCL.
    result = seg.log.rebase(base, ranges, smeta.vdl_hint)
    for lsn in result.dropped:
        seg.store.pop(lsn, None)
    if not result.rebased:
        return
    # The snapshot covers every record <= base, and nothing voided stays stored.
    for lsn in [lsn for lsn in seg.store if lsn <= base or in_ranges(lsn, meta.truncations)]:
        del seg.store[lsn]
    seg.base_lsn, seg.base_pages, seg.base_lsns = base, pages, lsns
    seg.persist([])


# --------------------------------------------------------------------------- supervisor
class SimSupervisor:
    def __init__(self, sim: Sim, limits: RepairLimits, timeout: float) -> None:
        self.sim = sim
        self.limits = limits
        self.timeout = timeout  # executor deadline, in simulation steps
        self.alive = True
        self.tasks: dict[int, Task] = {}
        self.unhealthy_since: dict[str, float] = {}
        self.returned: set[str] = set()  # back after being down: stale segments to drop

    # -- lifecycle ------------------------------------------------------------------
    def crash(self) -> None:
        self.sim.log.append(f"CRASH supervisor (tasks {sorted(self.tasks)})")
        self.sim.stats["supervisor_crashes"] += 1
        self.alive = False
        self.tasks = {}
        self.unhealthy_since = {}
        self.returned = set()

    def restart(self) -> None:
        """Resume from the durable state only: the placement and the segments."""
        sim = self.sim
        self.alive = True
        sim.log.append("RESTART supervisor")
        for pg, m in sim.memberships.items():
            if m.next_members is not None:
                (lost,) = set(m.members) - set(m.next_members)
                (target,) = set(m.next_members) - set(m.members)
                sources = tuple(s for s in m.members if s != lost)
                action = RepairAction(pg, lost, target, sources)
                self.tasks[pg] = Task(action, "create", sim.clock)
                sim.stats["resumed"] += 1
            elif any(
                sim.nodes[n].up
                and pg in sim.nodes[n].segments
                and sim.nodes[n].segments[pg].membership.epoch < m.epoch
                for n in m.members
            ):
                # Crashed between saving and recording the final membership.
                action = RepairAction(pg, "", "", ())
                self.tasks[pg] = Task(action, "record_final", sim.clock)
                sim.stats["resumed"] += 1
        for name, node in sim.nodes.items():
            if node.up:
                self._clean(name)

    # -- RPCs -------------------------------------------------------------------------
    def _rpc(self, name: str) -> tuple[bool, bool]:
        """(apply the effect, the caller hears success)."""
        sim = self.sim
        if not sim.nodes[name].up:
            return False, False
        if not sim.healing and sim.rng.random() < sim.w_loss * 0.5:
            applied = sim.rng.random() < 0.5  # the reply, not the request, was lost
            return applied, False
        return True, True

    def put_segment(self, name: str, pg: int, membership: Membership) -> bool:
        apply, ok = self._rpc(name)
        if apply:
            self.sim.node_put_segment(name, pg, membership)
        return ok

    def delete_segment(self, name: str, pg: int) -> bool:
        apply, ok = self._rpc(name)
        if apply and pg in self.sim.nodes[name].segments:
            del self.sim.nodes[name].segments[pg]
            self.sim.log.append(f"{name}/pg{pg} deleted")
            self.sim.stats["fenced_deleted"] += 1
        return ok

    def save(self, pg: int, old: Membership, new: Membership) -> None:
        """Compare-and-swap on the placement (atomic, durable)."""
        if self.sim.memberships[pg] != old:
            raise PlacementConflict(f"pg {pg}: placement is {self.sim.memberships[pg]}")
        self.sim.memberships[pg] = new
        self.sim.log.append(f"PLACEMENT pg{pg} -> e{new.epoch} {new.members} next={new.next_members}")

    # -- one tick -----------------------------------------------------------------------
    def tick(self) -> None:
        sim = self.sim
        now = sim.clock
        for name, node in sim.nodes.items():
            if node.up:
                if name in self.unhealthy_since:
                    self.returned.add(name)
                self.unhealthy_since.pop(name, None)
            else:
                self.unhealthy_since.setdefault(name, now)
        # Deviation: the playground tries once when a node returns; a lost DELETE then
        # leaves the stale segment for good (SIM_SEED=1088 with rebuilds). Retry.
        for name in sorted(self.returned):
            if sim.nodes[name].up and self._clean(name):
                self.returned.discard(name)
        health = {
            n: NodeHealth(n, node.zone, node.up, self.unhealthy_since.get(n))
            for n, node in sim.nodes.items()
        }
        plan = plan_repairs(sim.memberships, health, now, self.limits)
        sim.last_waiting = plan.waiting
        for action in plan.start:
            if action.pg not in self.tasks:
                sim.log.append(f"REPAIR pg{action.pg} {action.lost} -> {action.target}")
                sim.stats["repairs_started"] += 1
                self.tasks[action.pg] = Task(action, "dual", now)
        for pg in sorted(self.tasks):
            if not self.alive:
                return
            self._advance(pg, self.tasks[pg])

    def _clean(self, name: str) -> bool:
        """A node back after its segments moved keeps stale copies: drop them."""
        sim = self.sim
        ok = True
        for pg in sorted(sim.nodes[name].segments):
            if name not in sim.memberships[pg].all_members:
                ok = self.delete_segment(name, pg) and ok
        return ok

    def _record(self, task: Task, membership: Membership) -> bool:
        """Tell the members; True once a write quorum of each set has it."""
        done = set(task.recorded)
        for m in membership.all_members:
            if m not in done and self.put_segment(m, task.action.pg, membership):
                done.add(m)
        task.recorded = frozenset(done)
        return all(len(done & set(s)) >= WRITE_QUORUM for s in membership.sets)

    def _advance(self, pg: int, task: Task) -> None:
        sim = self.sim
        a = task.action
        placement = sim.memberships[pg]
        try:
            if task.step == "dual":
                self.save(pg, placement, placement.begin_replace(a.lost, a.target))
                task.step = "create"
            elif task.step == "create":
                if self.put_segment(a.target, pg, placement):
                    task.step, task.recorded = "record_dual", frozenset({a.target})
            elif task.step == "record_dual":
                if self._record(task, placement):
                    task.step = "hydrate"
            elif task.step == "hydrate":
                apply, ok = self._rpc(a.target)
                seg = sim.nodes[a.target].segments.get(pg)
                if seg is None:
                    ok = False
                elif apply:
                    started = start_hydration(seg, a.sources)
                    ok = ok and (started or seg.hydration in RUNNING)
                    if started:
                        sim.log.append(f"{a.target}/pg{pg} hydrate from {a.sources}")
                if ok:
                    task.step, task.earlier_peer_scl = "wait", None
            elif task.step == "wait":
                self._wait(pg, task)
            elif task.step == "finalize":
                self.save(pg, placement, placement.finish_replace())
                task.step, task.recorded = "record_final", frozenset()
            elif task.step == "record_final":
                if self._record(task, placement):
                    task.step = "fence"
            elif task.step == "fence":
                # Deviation: the playground executor ignores a failed DELETE, so a
                # replaced node that came back during the change keeps its stale segment
                # (SIM_SEED=146 with rebuilds). Retry while it is up; a node that is down
                # is cleaned when it returns.
                if a.lost and sim.nodes[a.lost].up and pg in sim.nodes[a.lost].segments:
                    if not self.delete_segment(a.lost, pg):
                        return
                del self.tasks[pg]
                sim.stats["repairs_done"] += 1
                sim.log.append(f"REPAIR pg{pg} done: {sim.memberships[pg].members}")
                return
            if task.step in ("create", "record_dual", "hydrate", "wait"):
                if sim.clock - task.started > self.timeout:
                    raise TimeoutError(f"pg {pg}: {a.target} did not catch up in time")
        except (TimeoutError, PlacementConflict, HydrationFailed) as exc:
            sim.log.append(f"REPAIR pg{pg} failed: {exc}")
            sim.stats["repairs_aborted"] += 1
            del self.tasks[pg]
            current = sim.memberships[pg]
            if current.next_members is not None:
                try:
                    self.save(pg, current, current.abort_replace())
                    sim.aborted_targets.add((a.target, pg))
                except PlacementConflict:
                    pass

    def _wait(self, pg: int, task: Task) -> None:
        sim = self.sim
        a = task.action
        peers = [
            sim.nodes[s].segments[pg].log.scl
            for s in a.sources
            if sim.nodes[s].up and pg in sim.nodes[s].segments
        ]
        peer_scl = max(peers, default=0)
        if sim.nodes[a.target].up and pg in sim.nodes[a.target].segments:
            seg = sim.nodes[a.target].segments[pg]
            if seg.hydration == "failed":
                # Like the executor: start it again a few times (a restart of G's node
                # cuts it short), then give up and abort.
                if task.attempts >= HYDRATE_ATTEMPTS:
                    raise HydrationFailed(f"pg {pg}: hydration failed on {a.target}")
                task.attempts += 1
                task.step = "hydrate"
                return
            if (
                seg.hydration in ("done", None)
                and task.earlier_peer_scl is not None
                and seg.log.scl >= task.earlier_peer_scl
            ):
                task.step = "finalize"
        task.earlier_peer_scl = peer_scl


class HydrationFailed(Exception):
    pass
