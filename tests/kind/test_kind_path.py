"""The user's path on a real kind cluster: the commands of docs/kind.md, then node, operator
and zone faults under the verifying workload Job."""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import pytest
from kindenv import Kind, condition, segments_full, wait_for

from tidemark_rig.kind import egress

# The first test also makes the cluster (cold: the node programs build, ~25 min).
pytestmark = [pytest.mark.kind, pytest.mark.timeout(3600)]

WORKLOAD = "job-name=tidemark-workload"
OPERATOR = "app.kubernetes.io/component=operator"


@pytest.fixture(scope="module")
def demo(kind_cluster: Kind) -> Kind:
    """docs/kind.md step 4: `kubectl apply -f examples/cluster.yaml`, wait for Ready."""
    k = kind_cluster
    k.kubectl("apply", "-f", "examples/cluster.yaml")
    k.kubectl("wait", "ac/demo", "--for=condition=Ready", "--timeout=5m", timeout=330)
    wait_for(lambda: segments_full(k.ac()), 300, "every PG at 6 healthy segments")
    return k


def test_the_egress_guard_is_in_place_while_a_cluster_exists(kind_cluster: Kind) -> None:
    nodes = kind_cluster.docker("ps", "--filter", f"label=io.x-k8s.kind.cluster={kind_cluster.name}",
                                "--format", "{{.Names}}").split()
    assert len(nodes) == 10, nodes
    assert egress.guard_problems() == []
    # CoreDNS must not forward names outside the cluster to the node's resolver.
    corefile = kind_cluster.json("-n", "kube-system", "get", "configmap", "coredns")["data"]["Corefile"]
    assert "forward" not in corefile


def test_cluster_yaml_is_ready_with_pods_in_their_zones_and_pvcs_bound(demo: Kind) -> None:
    zone_of_node = {n: z for z, nodes in demo.workers_by_zone().items() for n in nodes}
    pods = demo.pods("tidemark.dev/cluster=demo")
    assert len(pods) == 9
    for pod in pods:
        assert zone_of_node[pod["spec"]["nodeName"]] == pod["metadata"]["labels"]["tidemark.dev/zone"]
        # Pod Security "restricted": RuntimeDefault seccomp, no service-account token.
        assert pod["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["spec"]["automountServiceAccountToken"] is False
    # One storage pod per worker: each zone's third worker is the spare for a rebuild.
    assert len({p["spec"]["nodeName"] for p in pods}) == 9
    pvcs = demo.json("get", "pvc", "-l", "tidemark.dev/cluster=demo")["items"]
    assert len(pvcs) == 9 and all(p["status"]["phase"] == "Bound" for p in pvcs)
    # The operator passed its own image: the spec names none.
    assert "image" not in demo.ac()["spec"]
    operator_image = demo.pods(OPERATOR, "tidemark-system")[0]["spec"]["containers"][0]["image"]
    assert {p["spec"]["containers"][0]["image"] for p in pods} == {operator_image}


def _since(events: list[dict[str, Any]], t0: dt.datetime) -> list[dict[str, Any]]:
    def stamp(e: dict[str, Any]) -> dt.datetime:
        return dt.datetime.fromisoformat((e.get("lastTimestamp") or e["eventTime"]).replace("Z", "+00:00"))
    return [e for e in events if stamp(e) >= t0]


def _vdl_moves(k: Kind, seconds: float, what: str) -> None:
    start = int(k.ac()["status"]["vdl"])
    wait_for(lambda: int(k.ac()["status"]["vdl"]) > start, seconds, f"writes going on ({what})")


def test_workload_verifies_through_a_zone_kill_a_worker_kill_with_rebuild_and_an_operator_kill(
        demo: Kind) -> None:
    """The faults that need writes going on come first (the Job commits for 300 s); the
    rebuild, which waits out NotReady and repair.nodeLossTimeout, comes last."""
    k = demo
    k.kubectl("delete", "job", "tidemark-workload", "--ignore-not-found", "--wait=true", timeout=120)
    k.kubectl("apply", "-f", "examples/workload-job.yaml")
    wait_for(lambda: any(p["status"].get("phase") == "Running" for p in k.pods(WORKLOAD)), 180,
             "the workload pod running")
    _vdl_moves(k, 60, "workload started")

    # 1. A whole zone goes for 30 s (one with neither the workload nor the operator on it).
    avoid = k.node_of(WORKLOAD) | k.node_of(OPERATOR, "tidemark-system")
    zones = k.workers_by_zone()
    down_zone = next(z for z, workers in sorted(zones.items()) if not set(workers) & avoid)
    for w in zones[down_zone]:
        k.docker("kill", w)
    t_zone = time.monotonic()
    _vdl_moves(k, 60, f"zone {down_zone} down")
    time.sleep(max(0.0, 30 - (time.monotonic() - t_zone)))
    for w in zones[down_zone]:
        k.docker("start", w)
    for w in zones[down_zone]:
        k.kubectl("wait", f"node/{w}", "--for=condition=Ready", "--timeout=180s", timeout=200)

    # 2. A worker holding a storage pod dies (not the workload's, not the operator's).
    avoid = k.node_of(WORKLOAD) | k.node_of(OPERATOR, "tidemark-system")
    victim = next(p for p in k.pods("tidemark.dev/cluster=demo") if p["spec"]["nodeName"] not in avoid)
    worker, zone = victim["spec"]["nodeName"], victim["metadata"]["labels"]["tidemark.dev/zone"]
    t_kill = dt.datetime.now(dt.UTC).replace(microsecond=0)
    k.docker("kill", worker)
    _vdl_moves(k, 60, f"{worker} killed")

    # 3. The operator dies mid-repair; its successor finishes the rebuild.
    wait_for(lambda: _since(k.events("RepairStarted"), t_kill), 300, "a repair to start")
    k.kubectl("-n", "tidemark-system", "delete", "pod", "-l", OPERATOR, "--wait=false")
    wait_for(lambda: segments_full(k.ac()), 420, "every PG back to 6 segments while the worker is down")
    finished = _since(k.events("RepairFinished"), t_kill)
    assert finished, "no RepairFinished event"
    lost_pod = victim["metadata"]["name"]
    for event in finished:
        # "pg N: demo-zone-X-i replaced demo-zone-X-j": rebuilt in the same zone on the spare.
        assert f"replaced {lost_pod}" in event["message"] and f"demo-{zone}-" in event["message"], event
    k.docker("start", worker)
    k.kubectl("wait", f"node/{worker}", "--for=condition=Ready", "--timeout=180s", timeout=200)

    # 4. The Job verifies every acknowledged commit; the cluster heals fully.
    k.kubectl("wait", "job/tidemark-workload", "--for=condition=complete", "--timeout=10m", timeout=620)
    logs = k.kubectl("logs", "job/tidemark-workload")
    assert re.search(r"^\s*verified: True$", logs, re.M) and re.search(r"^\s*lost: 0$", logs, re.M), logs[-2000:]
    wait_for(lambda: condition(k.ac(), "Degraded") == "False", 420, "the cluster healed (Degraded False)")
