"""Seeded fault schedules of one writer and the segments of 1-3 PGs (see simulator.py).

Default: 1,000 schedules in 20 chunks of 50. `SIM_SCHEDULES=N` runs N instead;
`SIM_SEED=n` replays exactly one schedule (the one an assertion message names).
"""

from __future__ import annotations

import os

import pytest
from simulator import Sim, SimConfig, run_seed

pytestmark = pytest.mark.sim

CHUNKS = 20
SCHEDULES = int(os.environ.get("SIM_SCHEDULES", "1000"))
REPLAY = os.environ.get("SIM_SEED")


def _seeds(chunk: int) -> range:
    per = -(-SCHEDULES // CHUNKS)
    return range(chunk * per, min(SCHEDULES, (chunk + 1) * per))


@pytest.mark.skipif(REPLAY is not None, reason="SIM_SEED replays a single schedule")
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_schedules(chunk: int) -> None:
    for seed in _seeds(chunk):
        run_seed(seed)  # raises SimFailure naming "replay with SIM_SEED=<seed>"


def test_replay_seed() -> None:
    """SIM_SEED=<n> replays one schedule with its trace; without it, seed 288 (the
    schedule that showed recovery must fence its read quorum) runs as a regression."""
    sim = run_seed(int(REPLAY) if REPLAY is not None else 288)
    print("\n".join(sim.log[-60:]))
    print(sim.stats)


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
