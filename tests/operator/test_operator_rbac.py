"""The operator under the chart's ServiceAccount with one RBAC verb taken away (create on
PodDisruptionBudgets): the AuroraCluster's status says so in a condition naming the verb,
a Warning event says it once, the operator process stays up and healthy, and once the
verb is granted the cluster converges to Ready without a restart. Then a namespace
ResourceQuota refuses a Service the operator must create again: a `QuotaExceeded`
condition (not an RBAC hint), gone once the quota is (#14)."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from rigenv import NAME, cluster_body, cond, get_ac, operator_env, ready

from tidemark_operator.model import GROUP, PLURAL, VERSION, service_name
from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.procs import wait_for

pytestmark = [pytest.mark.rig, pytest.mark.operator]


def without_pdb_create(docs: list[dict[str, Any]]) -> None:
    for d in docs:
        if d["kind"] == "Role":
            for rule in d["rules"]:
                if "poddisruptionbudgets" in rule["resources"]:
                    rule["verbs"] = [v for v in rule["verbs"] if v != "create"]


def refused(env: dict[str, Any]) -> dict[str, Any]:
    """The cluster's `Reconciled` condition once it is False (bounded wait)."""
    def false() -> dict[str, Any] | None:
        c = cond(get_ac(env), "Reconciled")
        return c if c.get("status") == "False" else None

    return dict(wait_for(false, 90, "the Reconciled condition False", interval=0.5))


@pytest.fixture(scope="module")
def env(rig_cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    with operator_env(rig_cluster, tmp_path_factory, rbac_edit=without_pdb_create) as e:
        yield e


def test_a_missing_verb_is_a_status_condition_then_granting_it_converges(env: dict[str, Any]) -> None:
    ns, op = env["ns"], env["op"]
    env["co"].create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, cluster_body(NAME), _request_timeout=10)

    c = refused(env)
    assert c["reason"] == "PermissionDenied", c
    assert "poddisruptionbudgets" in c["message"] and "create" in c["message"], c
    assert f"system:serviceaccount:{ns}:{env['identity'].service_account}" in c["message"], c
    events = env["core"].list_namespaced_event(ns, field_selector="reason=PermissionDenied", _request_timeout=5)
    assert any("poddisruptionbudgets" in (ev.message or "") for ev in events.items)
    # the process is up and healthy: no crash, no crash loop
    assert op.proc is not None and op.proc.poll() is None
    with urllib.request.urlopen(f"http://127.0.0.1:{op.health_port}/healthz", timeout=5) as r:
        assert r.status == 200
    # refused again on the later passes (one a second): still one event for it
    time.sleep(5)
    events = env["core"].list_namespaced_event(ns, field_selector="reason=PermissionDenied", _request_timeout=5)
    assert len(events.items) == 1, [ev.message for ev in events.items]

    role = env["identity"].role()
    for rule in role["rules"]:
        if "poddisruptionbudgets" in rule["resources"]:
            rule["verbs"] = [*rule["verbs"], "create"]
    client.RbacAuthorizationV1Api(env["api"]).patch_namespaced_role(
        role["metadata"]["name"], ns, {"rules": role["rules"]}, _request_timeout=5)

    obj = wait_for(lambda: ready(env), 180, "the cluster Ready once the verb is granted", interval=1)
    assert cond(obj, "Reconciled")["status"] == "True"
    assert op.proc.poll() is None


def test_a_resource_quota_is_a_quota_condition_not_an_rbac_hint(env: dict[str, Any]) -> None:
    """Runs after the test above (the cluster Ready under the full Role)."""
    ns, core, op = env["ns"], env["core"], env["op"]
    quota = {"metadata": {"name": "no-services"}, "spec": {"hard": {"services": "0"}}}
    core.create_namespaced_resource_quota(ns, quota, _request_timeout=10)
    try:
        # the quota controller must have counted the namespace before admission enforces it
        wait_for(lambda: (core.read_namespaced_resource_quota("no-services", ns, _request_timeout=5).status.hard
                          or None), 60, "the quota counted", interval=0.5)
        core.delete_namespaced_service(service_name(NAME), ns, _request_timeout=10)  # drift: made again

        c = refused(env)
        assert c["reason"] == "QuotaExceeded", c
        assert "exceeded quota: no-services" in c["message"] and "ResourceQuota" in c["message"], c
        assert "rbac.yaml" not in c["message"], c
        events = core.list_namespaced_event(ns, field_selector="reason=QuotaExceeded", _request_timeout=5)
        assert len(events.items) == 1 and "no-services" in (events.items[0].message or "")
        assert op.proc is not None and op.proc.poll() is None
    finally:
        core.delete_namespaced_resource_quota("no-services", ns, _request_timeout=10)
    wait_for(lambda: cond(get_ac(env), "Reconciled").get("status") == "True", 120,
             "Reconciled True once the quota is gone", interval=1)
    assert core.read_namespaced_service(service_name(NAME), ns, _request_timeout=5).spec.cluster_ip == "None"
    assert ready(env) and op.proc.poll() is None
