"""Two operator processes with kopf peering on the rig (docs/operator.md "High
availability"): the standby does nothing while the leader lives; the leader is SIGKILLed
while a segment repair is in flight, and the standby takes over and finishes it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rigenv import (
    CRD,
    NAME,
    ROOT,
    TIDEMARK,
    Operator,
    cluster_body,
    operator_env,
    ready,
    workload_during,
)

from tidemark_operator import ha
from tidemark_operator.model import GROUP, PLURAL, VERSION, ZONE_POD_LABEL
from tidemark_operator.topology import cluster_topology
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.procs import tail, wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator]

PEERING_CRD = ROOT / "crds" / "kopfpeerings.kopf.dev.yaml"


class PeeredOperator(Operator):
    """`tidemark operator run --peering PEERING` as the chart runs it (kopf identity ID,
    as the chart's POD_ID), with a log of its own."""

    def __init__(self, kubeconfig: str, ns: str, log: Path, ident: str, peering: str) -> None:
        super().__init__(kubeconfig, ns, log)
        self.ident, self.peering = ident, peering

    def start(self, crash_at: str | None = None) -> None:
        assert crash_at is None
        args = ["run", "-n", self.ns, "--kubeconfig", self.kubeconfig, "--node-command", TIDEMARK,
                "--liveness", f"http://127.0.0.1:{self.health_port}/healthz",
                "--metrics-port", str(self.metrics_port), "--interval", "1", "--peering", self.peering]
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen([TIDEMARK, "operator", *args], stdout=fh, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, "POD_ID": self.ident})

    def logged(self, needle: str) -> bool:
        return needle in self.log.read_text(errors="replace")

    def reconciles(self) -> float:
        """Reconcile passes this process has run (its metrics endpoint)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(float(m) for m in re.findall(r"^tidemark_operator_reconciles_total\{[^}]*\} (\S+)$", text, re.M))


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory, crds=(CRD, PEERING_CRD)) as e:
        e["op"].kill(signal.SIGTERM)  # operator_env's standalone operator: replaced by two peers
        logs = tmp_path_factory.mktemp("peers")
        # the chart's peering object: its Role lets the operator patch that one only
        ident = e["identity"]
        peers = [PeeredOperator(str(ident.kubeconfig), e["ns"], logs / f"{i}.log", f"peer-{i}", ident.peering)
                 for i in ("a", "b")]
        e["peers"] = peers
        e["log"] = peers[0].log  # the conftest prints the leader's log on a failure
        try:
            yield e
        finally:
            # delete the cluster while a peer still runs (kopf's finalizer), then stop them
            with contextlib.suppress(Exception):
                e["co"].delete_namespaced_custom_object(GROUP, VERSION, e["ns"], PLURAL, NAME, _request_timeout=10)
                wait_for(lambda: not e["co"].list_namespaced_custom_object(
                    GROUP, VERSION, e["ns"], PLURAL, _request_timeout=5)["items"], 60, "the cluster deleted")
            for p in peers:
                p.kill(signal.SIGTERM)


def _peers_recorded(env: dict[str, Any]) -> set[str]:
    obj = env["co"].get_namespaced_custom_object(ha.PEERING_GROUP, ha.PEERING_VERSION, env["ns"], "kopfpeerings",
                                                 env["identity"].peering, _request_timeout=5)
    return set(obj.get("status") or {})


def test_standby_takes_over_a_repair_in_flight_when_the_leader_is_killed(env: dict[str, Any]) -> None:
    rig: ControlPlane = env["rig"]
    ns, core, co = env["ns"], env["core"], env["co"]
    leader, standby = env["peers"]

    # the leader first: it creates the KopfPeering and builds the cluster
    leader.start()
    wait_for(lambda: leader.logged(f"peering '{leader.peering}', priority"), 60, "the leader's startup",
             interval=0.2, on_timeout=lambda: tail(leader.log, 40))
    co.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, cluster_body(NAME, nodesPerZone=3),
                                       _request_timeout=10)
    wait_for(lambda: ready(env), 150, "AuroraCluster Ready with 4/4 healthy PGs", interval=0.5,
             on_timeout=lambda: tail(leader.log, 40))
    # then one rebuild at a time, throttled: a repair stays in flight for seconds
    co.patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, NAME,
        {"spec": {"repair": {"nodeLossTimeout": "3s", "maxConcurrentRebuilds": 1, "rebuildBandwidth": "64Ki"}}},
        _request_timeout=10)
    wait_for(lambda: ready(env), 60, "Ready with the new repair settings", interval=0.5)
    out = workload_during(env, lambda: time.sleep(2), settle=0.5)  # data, so a rebuild takes time
    assert out["failed"] == 0 and out["result"].ok

    # the standby starts later (a lower priority): it starts paused (mandatory peering)
    # and stays so, its keep-alives in the KopfPeering beside the leader's
    standby.start()
    wait_for(lambda: standby.logged(f"peering '{standby.peering}', priority"), 60, "the standby's startup",
             interval=0.2, on_timeout=lambda: tail(standby.log, 40))
    wait_for(lambda: _peers_recorded(env) == {"peer-a", "peer-b"}, 30, "both peers in the KopfPeering")
    time.sleep(3)  # three timer intervals in which a working peer would have run passes
    assert standby.reconciles() == 0 and leader.reconciles() > 0
    assert not standby.logged("Resuming operations") and not standby.logged("RepairResumed")
    assert standby.proc is not None and standby.proc.poll() is None

    # a worker with one pod of zone-a dies: its segments move to the zone's third pod
    by_node: dict[str, list[str]] = {}
    for p in core.list_namespaced_pod(ns, label_selector=f"{ZONE_POD_LABEL}=zone-a", _request_timeout=5).items:
        by_node.setdefault(p.spec.node_name, []).append(p.metadata.name)
    node, lost = next((n, ps[0]) for n, ps in sorted(by_node.items()) if len(ps) == 1)
    before = cluster_topology(core, ns, NAME)
    affected = sorted(pg for pg, m in before.memberships.items() if lost in m.members)
    assert len(affected) >= 2, affected

    def keep_dead() -> None:
        if node in rig.ready_nodes():
            rig.mark_node_not_ready(node)  # kwok can race the NotReady patch with a heartbeat

    def in_flight() -> list[int]:
        keep_dead()
        return [pg for pg, m in cluster_topology(core, ns, NAME).memberships.items() if m.next_members is not None]

    def repaired() -> bool:
        keep_dead()
        return all(m.next_members is None and lost not in m.members
                   for m in cluster_topology(core, ns, NAME).memberships.values())

    timing: dict[str, float] = {}
    try:
        rig.mark_node_not_ready(node)
        (p1,) = wait_for(in_flight, 90, "the leader to begin a repair", interval=0.1,
                         on_timeout=lambda: tail(leader.log, 40))
        t_kill = time.monotonic()
        leader.kill(signal.SIGKILL)  # no cleanup: its peering record stays until it expires
        assert in_flight() == [p1], "the repair finished before the kill: the test proves nothing"

        def resumed() -> bool:
            if standby.logged("Resuming operations after the pause"):
                timing.setdefault("resumed", time.monotonic() - t_kill)
            return standby.logged("RepairResumed") or standby.logged("RepairStarted")

        wait_for(resumed, ha.LIFETIME + 30, "the standby to take the repair over", interval=0.1,
                 on_timeout=lambda: tail(standby.log, 40))
        timing["acted"] = time.monotonic() - t_kill
        timing.setdefault("resumed", timing["acted"])
        wait_for(repaired, 240, f"segments of {lost} rebuilt elsewhere by the standby", interval=0.5,
                 on_timeout=lambda: tail(standby.log, 40))
        wait_for(lambda: ready(env), 90, "Ready with 4/4 PGs healthy after the repair", interval=0.5,
                 on_timeout=lambda: tail(standby.log, 40))
        timing["repaired"] = time.monotonic() - t_kill
    finally:
        rig.restore_nodes()
    print(f"leader SIGKILLed mid-repair of pg {p1}: the standby resumed after {timing['resumed']:.1f} s, "
          f"took the repair over after {timing['acted']:.1f} s, every PG had 6 segments after "
          f"{timing['repaired']:.1f} s (peering lifetime {ha.LIFETIME} s)")
    # kopf lets a dead peer block the standby until its keep-alive expires, no longer
    assert timing["resumed"] <= ha.LIFETIME + 10, timing

    # membership epochs advanced exactly as in a clean run: one dual step, one final step
    after = cluster_topology(core, ns, NAME)
    for pg, m in after.memberships.items():
        assert m.next_members is None, (pg, m)
        assert len(m.members) == 6 and lost not in m.members, (pg, m)
        if pg in affected:
            assert m.epoch == before.memberships[pg].epoch + 2, (pg, m)
            assert sum(1 for x in m.members if "-zone-a-" in x) == 2
        else:
            assert m == before.memberships[pg], (pg, m)
    # the standby said it picked up the leader's repair, and finished every one
    assert re.search(rf"RepairResumed: pg {p1}: resuming the replacement of {lost} ", standby.log.read_text())
    events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={NAME}", _request_timeout=5).items
    finished = {int(ev.message.split()[1].rstrip(":")) for ev in events
                if ev.reason == "RepairFinished" and f"replaced {lost}" in ev.message}
    assert set(affected) <= finished, [(ev.reason, ev.message) for ev in events]
    assert standby.reconciles() > 0
    # the standby dropped the dead leader's record from the peering
    wait_for(lambda: _peers_recorded(env) == {"peer-b"}, 30, "the dead leader's record cleaned")
