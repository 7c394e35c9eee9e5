"""Repair planning: same-zone targets, spread, limits, waiting with a reason."""

from __future__ import annotations

import pytest

from tidemark_protocol.quorum import Membership
from tidemark_protocol.repair import NodeHealth, RepairLimits, plan_repairs

pytestmark = pytest.mark.unit


def _nodes(per_zone: int = 3, down: dict[str, float] | None = None) -> dict[str, NodeHealth]:
    down = down or {}
    nodes = {}
    for zone in "abc":
        for i in range(1, per_zone + 1):
            name = f"{zone}{i}"
            nodes[name] = NodeHealth(name, zone, name not in down, down.get(name))
    return nodes


def _memberships(pgs: int) -> dict[int, Membership]:
    return {pg: Membership(1, ("a1", "a2", "b1", "b2", "c1", "c2")) for pg in range(pgs)}


def test_lost_segment_rebuilt_on_a_same_zone_node_without_a_segment_of_the_pg():
    plan = plan_repairs(_memberships(1), _nodes(down={"a1": 0.0}), now=100, limits=RepairLimits())
    assert [(a.pg, a.lost, a.target) for a in plan.start] == [(0, "a1", "a3")]
    assert "a1" not in plan.start[0].sources and len(plan.start[0].sources) == 5


def test_wait_before_rebuild():
    limits = RepairLimits(node_loss_timeout=30)
    assert not plan_repairs(_memberships(1), _nodes(down={"a1": 80.0}), 100, limits).start
    assert plan_repairs(_memberships(1), _nodes(down={"a1": 70.0}), 100, limits).start


def test_no_eligible_node_waits_with_a_reason():
    plan = plan_repairs(_memberships(2), _nodes(per_zone=2, down={"b2": 0.0}), 100, RepairLimits())
    assert not plan.start
    assert {w.pg for w in plan.waiting} == {0, 1}
    assert "zone b" in plan.waiting[0].reason


def test_rebuilds_spread_over_targets_and_respect_limits():
    nodes = _nodes(per_zone=4, down={"a1": 0.0})
    plan = plan_repairs(
        _memberships(4), nodes, 100, RepairLimits(max_concurrent=3, max_per_target=1)
    )
    assert len(plan.start) == 2  # two eligible targets (a3, a4), one rebuild each
    assert {a.target for a in plan.start} == {"a3", "a4"}
    assert all(w.lost == "a1" for w in plan.waiting)


def test_pg_with_change_in_progress_is_left_alone():
    memberships = {0: Membership(1, ("a1", "a2", "b1", "b2", "c1", "c2")).begin_replace("a1", "a3")}
    plan = plan_repairs(memberships, _nodes(down={"a1": 0.0}), 100, RepairLimits())
    assert not plan.start and not plan.waiting


def test_pg_below_write_quorum_waits_for_nodes_rather_than_rebuilding():
    down = {"a1": 0.0, "c1": 0.0, "c2": 0.0}
    plan = plan_repairs(_memberships(1), _nodes(down=down), 100, RepairLimits())
    assert not plan.start
    assert "below the write quorum" in plan.waiting[0].reason
