"""Seeded fault schedules of one writer and the segments of 1-3 PGs (see simulator.py).

Default: 1,000 schedules in 20 chunks of 50, plus REBUILD_DEFAULT schedules with node
losses and segment rebuilds (rebuild.py) in 8 chunks. `SIM_SCHEDULES=N` and
`SIM_REBUILD_SCHEDULES=N` run N instead; `SIM_STEPS=N` makes every schedule N steps
long (the long-run option, e.g. `SIM_STEPS=5000 SIM_REBUILD_SCHEDULES=2000`).
`SIM_SEED=n` replays exactly one schedule (the one an assertion message names; with
`SIM_REBUILDS=1` when it names that too).
"""

from __future__ import annotations

import os

import pytest
import rebuild
from simulator import Sim, SimConfig, run_seed

from tidemark_protocol.recovery import NoReadQuorum, plan_recovery
from tidemark_protocol.segment import in_ranges

pytestmark = pytest.mark.sim

CHUNKS = 20
SCHEDULES = int(os.environ.get("SIM_SCHEDULES", "1000"))
REBUILD_CHUNKS = 8
REBUILD_DEFAULT = 320
REBUILD_SCHEDULES = int(os.environ.get("SIM_REBUILD_SCHEDULES", str(REBUILD_DEFAULT)))
STEPS = int(os.environ.get("SIM_STEPS", "0"))  # 0: the default length (800)
REPLAY = os.environ.get("SIM_SEED")
REPLAY_REBUILDS = os.environ.get("SIM_REBUILDS", "") not in ("", "0")


def _config(rebuilds: bool) -> SimConfig:
    cfg = SimConfig(rebuilds=rebuilds)
    if STEPS:
        cfg.steps = STEPS
    return cfg


def _seeds(chunk: int, total: int = SCHEDULES, chunks: int = CHUNKS) -> range:
    per = -(-total // chunks)
    return range(chunk * per, min(total, (chunk + 1) * per))


@pytest.mark.skipif(REPLAY is not None, reason="SIM_SEED replays a single schedule")
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_schedules(chunk: int) -> None:
    for seed in _seeds(chunk):
        run_seed(seed, _config(False))  # raises SimFailure naming "replay with SIM_SEED=<seed>"


@pytest.mark.skipif(REPLAY is not None, reason="SIM_SEED replays a single schedule")
@pytest.mark.parametrize("chunk", range(REBUILD_CHUNKS))
def test_rebuild_schedules(chunk: int) -> None:
    """Nodes lost for good, rebuilt by the simulated supervisor (real planner, real
    membership transitions) under every other fault; see rebuild.py."""
    for seed in _seeds(chunk, REBUILD_SCHEDULES, REBUILD_CHUNKS):
        run_seed(seed, _config(True))  # "replay with SIM_SEED=<seed> SIM_REBUILDS=1"


def test_replay_seed() -> None:
    """SIM_SEED=<n> [SIM_REBUILDS=1] replays one schedule with its trace; without it,
    seed 288 (the schedule that showed recovery must fence its read quorum) runs as a
    regression."""
    if REPLAY is not None:
        sim = run_seed(int(REPLAY), _config(REPLAY_REBUILDS))
    else:
        sim = run_seed(288)
    print("\n".join(sim.log[-60:]))
    print(sim.stats)


@pytest.mark.parametrize("seed", [3, 146, 147, 1088])
def test_rebuild_regressions(seed: int) -> None:
    """Rebuild schedules that found bugs (docs/testing.md): 3, a read of a PG whose new
    member never acked (QuorumTracker.complete_segments KeyError); 146, a replaced node
    back during the change kept its stale segment (1088: one back after it, whose DELETE
    was lost); 147, hydration recorded the source's
    truncation ranges without dropping the records they void (the schedules have changed
    since; _hydrate_after_a_truncation pins that case down)."""
    run_seed(seed, SimConfig(rebuilds=True))


def _hydrate_after_a_truncation(applies_ranges: bool) -> Sim:
    """G joins an empty PG (dual membership), takes the first commit and, alone, the
    records of an unacknowledged one; the writer dies, recovery (G down) voids those
    records with a truncation range, G comes back and hydrates from a peer whose
    snapshot base (its VDL hint, 0) is below G's SCL, so the base is not installed;
    then the supervisor resumes the change and the fleet heals."""
    sim = Sim(5, SimConfig(rebuilds=True, pg_count=1, steps=0, hydrate_applies_ranges=applies_ranges))
    m = sim.memberships[0]
    f = m.members[-1]
    g = next(n for n, x in sim.nodes.items() if x.zone == sim.nodes[f].zone and n not in m.members)
    dual = m.begin_replace(f, g)
    sim.memberships[0] = dual
    for name in dual.all_members:
        sim.node_put_segment(name, 0, dual)
    w = sim.writer
    w.core.set_membership(0, dual)
    first = sim.start_mtr(w)
    while sim.net:
        sim._deliver(sim.net.pop(0))
    assert first.cpl in sim.acked
    second = sim.start_mtr(w)
    for msg in list(sim.net):
        sim.net.remove(msg)
        if msg.dst == g and msg.kind == "write":
            sim._deliver(msg)
    sim.net.clear()
    g_seg = sim.nodes[g].segments[0]
    assert g_seg.log.scl == second.cpl
    sim.crash_writer(keep_talking=False)
    sim.nodes[g].up = False
    assert sim.try_recover()
    assert any(in_ranges(second.cpl, [t]) for t in sim.truncations)
    sim.nodes[g].restart()
    g_seg = sim.nodes[g].segments[0]
    assert rebuild.start_hydration(g_seg, tuple(n for n in m.members if n != f))
    for _ in range(100):
        if g_seg.hydration not in rebuild.RUNNING:
            break
        rebuild.hydration_work(sim, g, 0)
    # The snapshot (base below G's SCL) merged the ranges; the log phase then fails: no
    # source is at G's volume epoch until the new writer seals G (with those ranges).
    assert g_seg.hydration == "failed" and g_seg.hyd_base < second.cpl
    sim.sup.restart()  # resumes the change from the placement: create, record, hydrate
    sim.heal()
    sim.check()
    return sim


def test_hydration_applies_the_sources_truncation_ranges() -> None:
    """Recording the source's ranges without dropping what they void (what
    node hydration did, as of issue #5, when the snapshot base is not above the target's
    SCL) leaves the voided records in G's chain: a later seal with that range skips it
    as known. G's SCL then counts an unacknowledged mini-transaction: the executor sees
    it "caught up" and finalizes, and G can never link the new writer's records (their
    back-link is below its SCL): a member that takes no writes."""
    _hydrate_after_a_truncation(True)
    with pytest.raises(AssertionError, match="do not reach read tail"):
        _hydrate_after_a_truncation(False)


def test_rebuilds_happen_under_faults() -> None:
    """Guard against a rebuild sweep that passes because nothing happens."""
    totals: dict[str, int] = {}
    for seed in range(24):
        sim = run_seed(seed, SimConfig(rebuilds=True))
        for key, value in sim.stats.items():
            totals[key] = totals.get(key, 0) + value
    for key in (
        "lost", "repairs_done", "repairs_aborted", "hydrations", "supervisor_crashes",
        "resumed", "fenced_deleted", "membership_reloads", "reads", "recoveries",
    ):  # fmt: skip
        assert totals[key] > 3, (key, totals)


def test_same_seed_same_schedule() -> None:
    a, b = run_seed(7), run_seed(7)
    assert a.log == b.log
    assert a.writer.core.vdl == b.writer.core.vdl


def test_schedules_make_progress_and_hit_faults() -> None:
    """Guard against a simulator that passes because nothing happens."""
    totals = {"acked": 0, "recoveries": 0, "node_crashes": 0, "stale_refusals": 0, "seals": 0}
    for seed in range(40):
        sim = run_seed(seed)
        totals["acked"] += len(sim.acked)
        for key in ("recoveries", "node_crashes", "stale_refusals", "seals"):
            totals[key] += sim.stats[key]
    assert totals["acked"] > 400
    assert all(v > 10 for v in totals.values()), totals


def test_long_schedules_forget_below_the_vdl_hint() -> None:
    """Long single-PG runs: chains pass 1,024 entries, so segments trim below the VDL
    hint (floor), and seals, rebuilds and recovery reports run with a floor."""
    floors = 0
    for seed in range(3):
        sim = run_seed(seed, SimConfig(steps=5000, pg_count=1, lal=1000, p_loss=0.02))
        floors += sum(s.log.meta.floor > 0 for n in sim.nodes.values() for s in n.segments.values())
    assert floors > 0


def test_failure_message_names_the_seed() -> None:
    sim = Sim(3, SimConfig(steps=10))
    with pytest.raises(AssertionError, match="replay with SIM_SEED=3"):
        sim.fail("boom")


def test_membership_hook_replace_segment() -> None:
    """Hook for the rebuild work: members come from Membership objects. Replace a
    segment mid-run (dual quorum while the new one hydrates by gossip), finish the
    replacement, and the usual end-of-schedule checks still hold."""
    done = 0
    for seed in range(40):
        sim = Sim(seed, SimConfig(steps=0, pg_count=1))
        m = sim.memberships[0]
        old = m.members[0]
        zone = sim.nodes[old].zone
        spare = next(
            (n for n, node in sim.nodes.items() if node.zone == zone and n not in m.members), None
        )
        if spare is None:
            continue
        for _ in range(150):
            sim.step()
        sim.set_membership(0, m.begin_replace(old, spare))
        assert 0 in sim.nodes[spare].segments
        for w in sim.writers:
            if w.alive:
                assert w.core.trackers[0].membership.next_members is not None
        for _ in range(150):
            sim.step()
        sim.heal()
        sim.healing = False
        sim.set_membership(0, sim.memberships[0].finish_replace())
        for _ in range(100):
            sim.step()
        sim.heal()
        sim.check()
        assert old not in sim.memberships[0].all_members
        done += 1
    assert done >= 5


def test_recovery_during_a_change_reads_the_old_set() -> None:
    """A commit acknowledged by {C, D, E, F} before F's replacement began; F is lost, the
    dual membership {A..F} ∪ {A..E,G} is recorded, the writer crashes before G hydrates.
    {G, A, B} is a read quorum of the new set but holds nothing of the commit: recovery
    must not accept it (it did, planning VDL 0 below the acknowledged commit)."""
    sim = Sim(1, SimConfig(rebuilds=True, pg_count=1, steps=0))
    m = sim.memberships[0]
    a, b, c, d, e, f = m.members
    mtr = sim.start_mtr(sim.writer)
    for msg in list(sim.net):
        sim.net.remove(msg)
        if msg.dst in (c, d, e, f):
            sim._deliver(msg)
    while sim.net:
        sim._deliver(sim.net.pop(0))
    assert mtr.cpl in sim.acked
    sim.nodes[f].lost, sim.nodes[f].up = True, False
    g = next(n for n, x in sim.nodes.items() if x.zone == sim.nodes[f].zone and n not in m.members)
    dual = m.begin_replace(f, g)
    sim.memberships[0] = dual
    for name in dual.all_members:
        if sim.nodes[name].up:
            sim.node_put_segment(name, 0, dual)
    sim.crash_writer(keep_talking=False)
    reports = {0: [sim._report(n, 0) for n in (g, a, b)]}
    with pytest.raises(NoReadQuorum):
        plan_recovery(reports, sim.memberships, sim.lal, min_epoch=2)
    reports[0].append(sim._report(c, 0))  # three of the old set: the commit is found
    assert plan_recovery(reports, sim.memberships, sim.lal, min_epoch=2).vdl >= mtr.cpl
