"""The whole fleet as real processes on loopback: node, zone and writer faults."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.verify_model import Model, slot_content
from tidemark_compute.workload import read_all_pages, run_workload, verify
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.status import converged, fleet_status
from tidemark_protocol.errors import StaleEpoch
from tidemark_protocol.pages import patch_payload
from tidemark_protocol.writer_core import Change

pytestmark = [pytest.mark.process, pytest.mark.timeout(180)]

_subnet = itertools.count(40)


@pytest.fixture
async def fleet(tmp_path: Path):
    # A fresh 127.0.N.x range per test: no clash with a previous test's lingering sockets.
    base_ip = f"127.0.{next(_subnet)}.10"
    fl, _topology = await fleet_mod.up(tmp_path / "pg", 2, 3, 32, 4096, base_ip, gossip_interval=0.3)
    try:
        yield fl
    finally:
        fl.down()
        for name in fl.nodes:
            log = fl.log_file(name)
            if log.exists():
                tail = log.read_text(errors="replace").splitlines()[-15:]
                print(f"--- {name} log tail ---\n" + "\n".join(tail))


async def _open(fl: fleet_mod.Fleet) -> Writer:
    topology = load_topology(fl.dir)
    writer = await Writer.open(topology, timeout=30, membership_source=membership_source(fl.dir))
    record_volume_epoch(fl.dir, topology.volume_epoch)
    return writer


async def _wait_converged(fl: fleet_mod.Fleet, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = await fleet_status(fl, load_topology(fl.dir))
        if converged(status):
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"fleet did not converge: {json.dumps(status['pgs'])}")
        await asyncio.sleep(0.3)


async def _assert_verified(writer: Writer, model: Model) -> None:
    result = await verify(writer, model, timeout=30)
    assert result.ok, result.to_json()
    assert result.acked > 0


async def test_one_node_killed_writes_continue(fleet):
    writer = await _open(fleet)
    model = Model()
    try:
        await run_workload(writer, model, 1.0, concurrency=8)
        fleet.kill("a1")
        stats = await run_workload(writer, model, 1.5, concurrency=8)
        assert stats.acked > 0, "writes must go on with 5 of 6 segments"
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_zone_killed_writes_continue_then_converge(fleet):
    writer = await _open(fleet)
    model = Model()
    try:
        fleet.kill("b1")
        fleet.kill("b2")
        stats = await run_workload(writer, model, 1.5, concurrency=8)
        assert stats.acked > 0, "writes must go on with a whole zone down"
        for name in ("b1", "b2"):
            fleet.spawn(fleet.nodes[name])
        await fleet_mod.wait_ready([fleet.nodes["b1"], fleet.nodes["b2"]])
        await run_workload(writer, model, 0.5, concurrency=8)
        await _wait_converged(fleet)
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_zone_plus_one_reads_go_on_writes_wait_then_resume(fleet):
    writer = await _open(fleet)
    model = Model()
    try:
        await run_workload(writer, model, 0.5, concurrency=8)
        for name in ("c1", "c2", "a1"):
            fleet.kill(name)
        # Reads go on from the three survivors (after gossip makes one complete).
        pages = model.pages()
        read = await read_all_pages(writer, pages, timeout=20)
        assert len(read) == len(pages)
        # Writes wait: no write quorum. (A slot the model tracks: an untracked write into
        # a slot the workload happened to use read back as a corrupt slot.)
        mtr = model.next_id
        cpl, fut = await writer.submit([Change(0, patch_payload(0, slot_content(mtr, 0, 0)))])
        model.intent(mtr, cpl, [(0, 0)])
        await asyncio.sleep(1.0)
        assert not fut.done(), (
            "a commit must not complete with only 3 of 6 segments: "
            f"{fut.exception() if fut.exception() else fut.result()}; "
            f"scls={writer.core.trackers[0].scl} pgcl={writer.core.pgcl(0)} cpl={cpl}"
        )
        fleet.spawn(fleet.nodes["a1"])
        assert await asyncio.wait_for(fut, timeout=20) == cpl, "writes resume with 4 of 6"
        model.ack(mtr, time.time())
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_paused_node_does_not_stall_writes_and_catches_up(fleet):
    writer = await _open(fleet)
    model = Model()
    try:
        fleet.pause("c1")
        stats = await run_workload(writer, model, 1.5, concurrency=8)
        assert stats.acked > 0
        fleet.resume("c1")
        await _wait_converged(fleet)
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_restarted_node_catches_up_by_gossip_alone(fleet):
    writer = await _open(fleet)
    model = Model()
    fleet.kill("b2")
    try:
        await run_workload(writer, model, 1.5, concurrency=8)
    finally:
        await writer.close()  # no writer left to re-send: catch-up must come from peers
    fleet.spawn(fleet.nodes["b2"])
    await fleet_mod.wait_ready([fleet.nodes["b2"]])
    status = await _wait_converged(fleet)
    assert all(p["complete_segments"] == 6 for p in status["pgs"])
    writer = await _open(fleet)
    try:
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_stale_epoch_writer_is_refused(fleet):
    old = await _open(fleet)
    model = Model()
    try:
        await run_workload(old, model, 0.3, concurrency=4)
        new = await _open(fleet)
        assert new.core.volume_epoch > old.core.volume_epoch
        with pytest.raises(StaleEpoch):
            await asyncio.wait_for(old.commit([Change(1, patch_payload(0, b"stale!!!"))]), timeout=10)
        await _assert_verified(new, model)  # before writing outside the model
        await new.commit([Change(1, patch_payload(0, b"fresh!!!"))])
        page = await new.read_page(1)
        assert page[:8] == b"fresh!!!"
        await new.close()
    finally:
        await old.close()


async def test_writer_sigkilled_mid_transaction_then_recovered(fleet, tmp_path):
    log = tmp_path / "workload.log"
    cmd = [sys.executable, "-m", "tidemark_cli.main", "workload", "--dir", str(fleet.dir)]
    proc = subprocess.Popen([*cmd, "--seconds", "60", "--log", str(log)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if log.exists() and log.read_text().count('"ack"') >= 200:
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the workload never acknowledged 200 commits")
        os.kill(proc.pid, signal.SIGKILL)  # mid-transaction: dozens are in flight
    finally:
        proc.kill()
        proc.wait(timeout=10)
    out = subprocess.run(
        [*cmd, "--seconds", "0", "--verify", "--json", "--log", str(log)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout)
    assert summary["verified"] and summary["lost"] == 0
    assert summary["verify"]["acked"] >= 200
    assert summary["volume_epoch"] >= 2  # the crashed writer's epoch was superseded


async def test_writer_follows_a_node_whose_address_changed(fleet):
    """A pod recreated with a new IP: after a few refused connects the writer re-reads
    the topology (its membership source) and streams to the node's new address."""
    real = load_topology(fleet.dir)
    stale = load_topology(fleet.dir)
    stale.nodes["a1"] = "http://127.0.0.1:9"  # nothing listens there (discard port)
    writer = await Writer.open(stale, timeout=30, membership_source=membership_source(fleet.dir))
    record_volume_epoch(fleet.dir, stale.volume_epoch)
    model = Model()
    try:
        await run_workload(writer, model, 1.5, concurrency=8)
        deadline = time.monotonic() + 20
        while not writer.streams["a1"].connected.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert writer.streams["a1"].url == real.nodes["a1"]
        assert writer.streams["a1"].connected.is_set(), "the writer never reached a1 at its new address"
        await run_workload(writer, model, 0.5, concurrency=8)
        await _wait_converged(fleet)
        await _assert_verified(writer, model)
    finally:
        await writer.close()


async def test_writer_read_history_stays_bounded(fleet):
    """The writer keeps, per PG, the LSNs a read at a point still in use may need; the
    rest is dropped as VDL moves (it once grew by one entry per record for the life of
    the writer: forget_below had no caller)."""
    writer = await _open(fleet)
    sem = asyncio.Semaphore(32)
    pages = writer.topology.layout.page_count

    async def one(i: int) -> None:
        async with sem:
            await writer.commit([Change(i * 7 % pages, patch_payload(0, i.to_bytes(8, "little")))])

    try:
        await asyncio.gather(*(one(i) for i in range(6000)))
        pgs = writer.topology.layout.pg_count
        assert writer.core.read_history_size() <= pgs * 1100, writer.core.read_history_size()
        page = 6000 * 7 % pages  # reads at VDL still find their tail
        assert len(await writer.read_page(page)) == writer.topology.layout.page_size
    finally:
        await writer.close()
