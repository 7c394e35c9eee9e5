"""Switchover decisions (tidemark_operator.switchover.step), pass by pass, and the order of
a rolling update of the instances (replicas first). The Kube here is a recorder of pod deletions (a stand-in: the rig test runs the real one)."""

from __future__ import annotations

from typing import Any

import pytest

from tidemark_operator import switchover
from tidemark_operator.instance_resources import hold_writer, rolled_out, template_changes
from tidemark_operator.instances import InstancePod
from tidemark_operator.model import SWITCHOVER_ANNOTATION, TEMPLATE_HASH

pytestmark = [pytest.mark.unit, pytest.mark.operator]

W1 = InstancePod("db-writer-a", "writer", "10.0.0.1", True)
W2 = InstancePod("db-writer-b", "writer", "10.0.0.2", True)
R1 = InstancePod("db-replica-a", "replica", "10.0.0.3", True)


class DeletionRecorder:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    def delete_pod(self, name: str, ns: str) -> None:
        self.deleted.append(name)


def body(request: str | None, last: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "db", "namespace": "ns"}
    if request is not None:
        meta["annotations"] = {SWITCHOVER_ANNOTATION: request}
    return {"metadata": meta, "status": {"switchover": last} if last else {}}


def run(kube: DeletionRecorder, b: dict[str, Any], pods: list[InstancePod], holder: str | None, serving: bool,
        now: float = 1000.0) -> tuple[dict[str, Any] | None, list[tuple[str, str, str]]]:
    events: list[tuple[str, str, str]] = []
    out = switchover.step(kube, "ns", b, pods, holder, serving, lambda *e: events.append(e),  # type: ignore[arg-type]
                          "1970-01-01T00:16:40Z", now)
    return out, events


def test_a_request_stops_the_serving_writer_once_then_finishes_when_a_new_writer_serves() -> None:
    kube = DeletionRecorder()
    started, events = run(kube, body("r1"), [W1, R1], W1.name, True)
    assert kube.deleted == [W1.name] and started["phase"] == "Switching" and started["from"] == W1.name
    assert [e[1] for e in events] == ["SwitchoverStarted"]
    # next passes: the old writer still holds the Lease, then nobody serves: wait, do nothing
    again, events = run(kube, body("r1", started), [R1], W1.name, False, now=1005.0)
    assert again == started and kube.deleted == [W1.name] and not events
    done, events = run(kube, body("r1", started), [W2, R1], W2.name, True, now=1012.5)
    assert done["phase"] == "Done" and done["to"] == W2.name and done["durationSeconds"] == 12.5
    assert [e[1] for e in events] == ["Switchover"]
    # the same request id later: nothing more
    later, events = run(kube, body("r1", done), [W2, R1], W2.name, True, now=2000.0)
    assert later == done and kube.deleted == [W1.name] and not events


def test_refused_without_a_serving_writer_and_timed_out_when_none_comes() -> None:
    kube = DeletionRecorder()
    refused, events = run(kube, body("r2"), [R1], None, False)
    assert refused["phase"] == "Refused" and not kube.deleted and events[0][1] == "SwitchoverRefused"
    started, _ = run(kube, body("r3"), [W1], W1.name, True)
    late, events = run(kube, body("r3", started), [], None, False, now=1000.0 + switchover.TIMEOUT_S + 1)
    assert late["phase"] == "TimedOut" and events[0][1] == "SwitchoverTimedOut"


def test_no_annotation_no_switchover() -> None:
    kube = DeletionRecorder()
    assert run(kube, body(None), [W1], W1.name, True) == (None, [])
    assert switchover.requested(body("  ")) is None


def _deployment(template_hash: str, replicas: int, updated: int, available: int, total: int | None = None,
                generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {"metadata": {"annotations": {TEMPLATE_HASH: template_hash}, "generation": generation},
            "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "updatedReplicas": updated, "availableReplicas": available,
                       "replicas": replicas if total is None else total}}


def test_the_writer_template_waits_until_every_replica_runs_the_new_one() -> None:
    new_w, new_r = _deployment("w2", 1, 1, 1), _deployment("r2", 2, 2, 2)
    old_w = _deployment("w1", 1, 1, 1)
    assert not hold_writer(None, new_w, None, new_r)  # nothing to update yet: create
    assert not hold_writer(new_w, new_w, _deployment("r1", 2, 2, 2), new_r)  # the writer is current
    assert hold_writer(old_w, new_w, _deployment("r1", 2, 2, 2), new_r)  # replicas not patched yet
    assert hold_writer(old_w, new_w, _deployment("r2", 2, 1, 2, total=3), new_r)  # mid-rollout
    assert hold_writer(old_w, new_w, _deployment("r2", 2, 2, 1), new_r)  # a new replica not available
    assert hold_writer(old_w, new_w, _deployment("r2", 2, 2, 2, observed=1), new_r)  # not observed yet
    assert rolled_out(_deployment("r2", 2, 2, 2), new_r)
    assert not hold_writer(old_w, new_w, _deployment("r2", 2, 2, 2), new_r)  # replicas done: the writer goes
    assert not hold_writer(old_w, new_w, None, _deployment("r2", 0, 0, 0))  # no replicas: the writer at once
    assert template_changes(old_w, new_w) and not template_changes(new_w, new_w) and not template_changes(None, new_w)
