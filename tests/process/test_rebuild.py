"""Segment rebuild in the playground: a lost node's segments move within its zone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.status import fleet_status
from tidemark_playground.supervisor import read_repairs
from tidemark_protocol.hydration import RUNNING
from tidemark_protocol.node_auth import Role

pytestmark = [pytest.mark.process, pytest.mark.rebuild, pytest.mark.timeout(240)]

_subnet = itertools.count(80)


@pytest.fixture
async def fleet(tmp_path: Path):
    base_ip = f"127.0.{next(_subnet)}.10"
    repair = {"node_loss_timeout": 1.0, "max_concurrent": 4, "bandwidth": 0}
    fl, _ = await fleet_mod.up(tmp_path / "pg", 3, 4, 32, 4096, base_ip, gossip_interval=0.3, repair=repair)
    try:
        yield fl
    finally:
        fl.down()
        for name in [*fl.nodes, "supervisor"]:
            log = fl.log_file(name)
            if log.exists():
                print(f"--- {name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-12:]))


async def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.3)


async def test_killed_node_segments_rebuilt_in_zone_with_workload_running(fleet):
    topology = load_topology(fleet.dir)
    lost_pgs = [pg for pg, m in topology.memberships.items() if "a1" in m.members]
    assert lost_pgs, "placement should give a1 some segments"
    writer = await Writer.open(topology, membership_source=membership_source(fleet.dir))
    record_volume_epoch(fleet.dir, topology.volume_epoch)
    model = Model()
    stop = asyncio.Event()
    work = asyncio.create_task(run_workload(writer, model, 120, concurrency=8, stop=stop))
    try:
        await asyncio.sleep(1.0)
        fleet.kill("a1")

        async def rebuilt():
            topo = load_topology(fleet.dir)
            moved = all("a1" not in topo.memberships[pg].all_members for pg in lost_pgs)
            status = await fleet_status(fleet, topo)
            healthy = all(p["healthy_segments"] == 6 for p in status["pgs"])
            return topo if moved and healthy else None

        topo = await _wait(rebuilt, 90, "a1's segments to be rebuilt elsewhere in zone a")
        for pg in lost_pgs:
            members = topo.memberships[pg].members
            zone_a = [m for m in members if m.startswith("a")]
            assert len(zone_a) == 2 and "a1" not in zone_a, members
            assert topo.memberships[pg].epoch == 3  # dual step + final step
        before = model.next_id
        await asyncio.sleep(1.0)
        assert model.next_id > before, "the workload kept committing after the rebuild"
    finally:
        stop.set()
    await _finish_verified(work, writer, model)
    history = read_repairs(fleet.dir)["history"]
    assert {h["pg"] for h in history if h["step"] == "done"} >= set(lost_pgs), json.dumps(history)

    # The lost node comes back: its stale segments are fenced and dropped.
    fleet.spawn(fleet.nodes["a1"])
    await fleet_mod.wait_ready([fleet.nodes["a1"]])

    async def cleaned():
        status = await fleet_status(fleet, load_topology(fleet.dir))
        a1 = next(n for n in status["nodes"] if n["name"] == "a1")
        return a1["alive"] and not {s["pg"] for s in a1["segments"]} & set(lost_pgs)

    await _wait(cleaned, 30, "a1's stale segments to be dropped")


async def _finish_verified(work, writer, model):
    """The stopped workload lost nothing: no failed commit, every acknowledged one read back."""
    stats = await work
    assert stats.failed == 0
    result = await verify(writer, model, timeout=30)
    await writer.close()
    assert result.ok and result.acked > 0, result.to_json()
    return stats


# -- a supervisor killed mid-repair --------------------------------------------------------


async def _node_statuses(fl) -> dict[str, dict | None]:
    async def one(url: str) -> dict | None:
        try:
            async with session.get(f"{url}/v1/status") as resp:
                return await resp.json() if resp.status == 200 else None
        except (TimeoutError, aiohttp.ClientError, OSError):
            return None

    async with load_topology(fl.dir).session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=2)) as session:
        names = list(fl.nodes)
        got = await asyncio.gather(*(one(fl.nodes[n].url) for n in names))
    return dict(zip(names, got, strict=True))


def _segment(status: dict | None, pg: int) -> dict | None:
    return next((s for s in (status or {}).get("segments", []) if s["pg"] == pg), None)


CRASHING_SUPERVISOR = Path(__file__).with_name("crashing_supervisor.py")


def _spawn_supervisor(fl, crash_at: str | None = None) -> None:
    """Restart the supervisor the way `playground up` does on an existing fleet
    (Fleet.spawn_supervisor), optionally one that dies at a crash point."""
    fl.stop_supervisor()
    fl.spawn_supervisor([sys.executable, str(CRASHING_SUPERVISOR), crash_at] if crash_at else None)


@pytest.mark.timeout(300)
async def test_supervisor_killed_mid_repair_resumes_and_finishes_it(tmp_path: Path):
    """The supervisor dies right after writing a dual membership, then again (SIGKILL,
    together with the target's node) while a target hydrates; each new supervisor picks
    the repair up from the placement and finishes it as a clean run would."""
    base_ip = f"127.0.{next(_subnet)}.10"
    repair = {"node_loss_timeout": 1.0, "max_concurrent": 1, "bandwidth": 65536}
    fl, before = await fleet_mod.up(tmp_path / "pg", 3, 4, 32, 4096, base_ip, gossip_interval=0.3, repair=repair)
    seen: dict = {}
    work: asyncio.Task | None = None
    try:
        initial = dict(before.memberships)  # the writer reloads memberships into `before`
        lost_pgs = [pg for pg, m in initial.items() if "a1" in m.members]
        assert len(lost_pgs) >= 2, initial
        writer = await Writer.open(before, membership_source=membership_source(fl.dir))
        record_volume_epoch(fl.dir, before.volume_epoch)
        model = Model()
        stop = asyncio.Event()
        work = asyncio.create_task(run_workload(writer, model, 240, concurrency=8, stop=stop))
        try:
            # 1. dies right after saving the dual membership, before telling any node
            _spawn_supervisor(fl, "after-begin")
            await asyncio.sleep(1.5)
            fl.kill("a1")

            async def supervisor_dead():
                return fleet_mod.pid_state(int(fl.options["supervisor_pid"])) == "dead"

            await _wait(supervisor_dead, 30, "the supervisor to die after beginning a repair")
            topo = load_topology(fl.dir)
            dual = [pg for pg, m in topo.memberships.items() if m.next_members is not None]
            assert len(dual) == 1 and dual[0] in lost_pgs, topo.memberships
            p1 = dual[0]
            m1 = topo.memberships[p1]
            assert m1.epoch == initial[p1].epoch + 1
            (target1,) = set(m1.next_members) - set(m1.members)
            assert _segment((await _node_statuses(fl))[target1], p1) is None, "the crash came too late"
            seen["begin"] = (p1, target1)

            # 2. a new supervisor resumes it and dies right after saving the final
            #    membership, before recording it on the segments (the next one's first
            #    pass records every PG's membership again)
            _spawn_supervisor(fl, "after-finish")
            await _wait(supervisor_dead, 60, "the supervisor to die after finishing a repair")
            m1 = load_topology(fl.dir).memberships[p1]
            assert m1.next_members is None and target1 in m1.members and "a1" not in m1.members
            assert m1.epoch == initial[p1].epoch + 2
            seen["finish"] = p1

            # 3. the next one records it; killed while a target hydrates, and that
            #    target's node restarts too (its rebuild is cut short: hydrated again)
            _spawn_supervisor(fl)

            async def hydrating():
                topo = load_topology(fl.dir)
                statuses = await _node_statuses(fl)
                for pg, m in topo.memberships.items():
                    for new in set(m.next_members or ()) - set(m.members):
                        h = (_segment(statuses[new], pg) or {}).get("hydration") or {}
                        if h.get("state") in RUNNING:
                            return pg, new, h
                return None

            pg, target, h = await _wait(hydrating, 60, "a target hydrating")
            fl.stop_supervisor()
            fl.restart(target)
            await fleet_mod.wait_ready([fl.nodes[target]])
            st = _segment((await _node_statuses(fl))[target], pg)
            seen["hydrating"] = (pg, target, h.get("state"), (st or {}).get("hydration", {}).get("state"))
            _spawn_supervisor(fl)

            async def rebuilt():
                topo = load_topology(fl.dir)
                moved = all("a1" not in topo.memberships[p].all_members for p in lost_pgs)
                status = await fleet_status(fl, topo)
                healthy = all(p["healthy_segments"] == 6 for p in status["pgs"])
                return topo if moved and healthy else None

            topo = await _wait(rebuilt, 150, "a1's segments to be rebuilt elsewhere in zone a")
            before_ids = model.next_id
            await asyncio.sleep(1.0)
            assert model.next_id > before_ids, "the workload kept committing after the rebuild"
        finally:
            stop.set()
        stats = await _finish_verified(work, writer, model)
        print("supervisor restarts:", seen, "acked", stats.acked, "failed", stats.failed)

        # epochs advanced exactly as a clean run: one dual step and one final step each
        for p, m in topo.memberships.items():
            assert m.next_members is None, (p, m)
            if p in lost_pgs:
                assert m.epoch == initial[p].epoch + 2, (p, m)
                assert "a1" not in m.members
                assert sum(1 for x in m.members if x.startswith("a")) == 2, m.members
            else:
                assert m == initial[p], (p, m)
        assert seen["hydrating"][3] == "failed", seen  # the node restart cut the rebuild short
        # the history survives the supervisors; p1's "done" died with the second one
        history = read_repairs(fl.dir)["history"]
        done = [x for x in history if x["step"] == "done"]
        assert {x["pg"] for x in done} >= set(lost_pgs) - {p1}, json.dumps(history)
        assert pg in {x["pg"] for x in done if x.get("resumed")}, json.dumps(history)

        # a1 comes back: every node then holds exactly the segments the placement gives
        # it (no stale copy, no abandoned target), none of them half-hydrated
        fl.spawn(fl.nodes["a1"])
        await fleet_mod.wait_ready([fl.nodes["a1"]])

        async def settled():
            statuses = await _node_statuses(fl)
            if any(st is None for st in statuses.values()):
                return False
            held = {(n, s["pg"]) for n, st in statuses.items() for s in st["segments"]}
            placed = {(x, p) for p, m in load_topology(fl.dir).memberships.items() for x in m.members}
            states = {(s.get("hydration") or {}).get("state") for st in statuses.values() for s in st["segments"]}
            return held == placed and states <= {"idle", "done"}

        await _wait(settled, 30, "every node holding exactly its placed segments")
    finally:
        if work is not None and not work.done():  # a failed wait: do not let it outlive the fleet
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        fl.down()
        for name in [*fl.nodes, "supervisor"]:
            log = fl.log_file(name)
            if log.exists():
                print(f"--- {name} ---\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))
