"""Segment rebuild in the playground: a lost node's segments move within its zone."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path

import pytest

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.verify_model import Model
from tidemark_compute.workload import run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.status import fleet_status
from tidemark_playground.supervisor import read_repairs

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
    stats = await work
    assert stats.failed == 0
    result = await verify(writer, model, timeout=30)
    await writer.close()
    assert result.ok and result.acked > 0, result.to_json()
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
