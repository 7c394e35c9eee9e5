"""Operator high availability without a cluster: the chart's replicas, peering and its
RBAC (helm template), the CLI's choice of kopf peering mode, the peers' priorities and
what a peer forgets after a pause (tidemark_operator.ha)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
import structlog
import yaml
from click.testing import CliRunner
from helmrun import helm
from kopf._cogs.aiokits import aioenums
from kopf._cogs.structs import references
from kubernetes.client.exceptions import ApiException

from tidemark_operator import cli, ha, handlers
from tidemark_operator.state import ClusterState, LeaseSeen

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tidemark"
PEERING_CRDS = {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}




def render(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    out = helm(tmp_path, "template", "tm", str(CHART), "--namespace", "tm-system", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def deployment(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "Deployment")


def peering_rules(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == "tm-tidemark-operator-peering"]


# -- the chart -----------------------------------------------------------------------------------

def test_chart_runs_two_peered_replicas_with_a_rolling_update(tmp_path: Path) -> None:
    dep = deployment(render(tmp_path))
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"] == {"type": "RollingUpdate",
                                       "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert "--peering=tm-tidemark-operator" in c["args"] and "--namespace=tm-system" in c["args"]
    assert not any(a.startswith("--priority") for a in c["args"])  # each pod its own (ha.default_priority)
    assert {"name": "POD_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in c["env"]
    # the replicas spread over hosts unless the values give an affinity
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    mine = deployment(render(tmp_path, "--set", "operator.affinity.nodeAffinity.x=y"))
    assert mine["spec"]["template"]["spec"]["affinity"] == {"nodeAffinity": {"x": "y"}}
    one = deployment(render(tmp_path, "--set", "operator.replicas=1"))
    assert one["spec"]["replicas"] == 1 and "--peering=tm-tidemark-operator" in \
        one["spec"]["template"]["spec"]["containers"][0]["args"]  # still peered: scaling up is safe


def test_chart_refuses_zero_replicas(tmp_path: Path) -> None:
    res = helm(tmp_path, "template", "tm", str(CHART), "--set", "operator.replicas=0", ok=False)
    assert res.returncode != 0 and "schema" in res.stderr, res.stderr


def test_chart_installs_kopfs_peering_crds_like_its_own(tmp_path: Path) -> None:
    crds = {d["metadata"]["name"]: d for d in render(tmp_path) if d["kind"] == "CustomResourceDefinition"}
    assert PEERING_CRDS <= set(crds)
    for name in PEERING_CRDS:
        crd = crds[name]
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
        assert crd["spec"]["group"] == "kopf.dev"
        (version,) = crd["spec"]["versions"]
        assert version["name"] == "v1"
        assert version["schema"]["openAPIV3Schema"]["properties"]["status"]["x-kubernetes-preserve-unknown-fields"]
        assert (CHART / "files" / "crds" / f"{name}.yaml").read_text() == (ROOT / "crds" / f"{name}.yaml").read_text()
    assert crds["clusterkopfpeerings.kopf.dev"]["spec"]["scope"] == "Cluster"
    assert crds["kopfpeerings.kopf.dev"]["spec"]["scope"] == "Namespaced"
    # the group and plurals kopf looks for
    assert {(s.group, s.any_name) for s in (references.CLUSTER_PEERINGS_K,
                                          references.NAMESPACED_PEERINGS_K)} == \
        {("kopf.dev", "clusterkopfpeerings"), ("kopf.dev", "kopfpeerings")}
    left = {d["metadata"]["name"] for d in render(tmp_path, "--set", "crds.kopfPeering=false")
            if d["kind"] == "CustomResourceDefinition"}
    assert left == {"auroraclusters.tidemark.dev", "aurorasnapshots.tidemark.dev"}
    assert not [d for d in render(tmp_path, "--set", "crds.create=false") if d["kind"] == "CustomResourceDefinition"]


def _check_peering_rules(rules: list[dict[str, Any]], plural: str) -> None:
    by_verb = {v: r for r in rules for v in r["verbs"]}
    assert set(by_verb) == {"list", "watch", "create", "get", "patch"}
    assert all(r["apiGroups"] == ["kopf.dev"] and r["resources"] == [plural] for r in rules)
    # the keep-alive patches only the release's own peering object
    assert by_verb["patch"]["resourceNames"] == ["tm-tidemark-operator"]
    assert by_verb["get"]["resourceNames"] == ["tm-tidemark-operator"]


def test_chart_peering_rbac_namespaced(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "operator.watchNamespaces={a,b}")
    roles = peering_rules(docs, "Role")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["a", "b"]
    for role in roles:
        _check_peering_rules(role["rules"], "kopfpeerings")
    bindings = peering_rules(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in bindings) == ["a", "b"]
    assert all(b["roleRef"]["name"] == "tm-tidemark-operator-peering" and
               b["subjects"] == [{"kind": "ServiceAccount", "name": "tm-tidemark", "namespace": "tm-system"}]
               for b in bindings)
    assert not peering_rules(docs, "ClusterRole")  # a namespaced operator peers per namespace
    # the operator's own ClusterRole (rbac.yaml) stays read-only
    main_cr = next(d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "tm-tidemark-operator")
    assert {v for r in main_cr["rules"] for v in r["verbs"]} == {"get", "list", "watch"}


def test_chart_peering_rbac_cluster_wide(tmp_path: Path) -> None:
    docs = render(tmp_path, "--set", "operator.watchAllNamespaces=true")
    (cr,) = peering_rules(docs, "ClusterRole")
    _check_peering_rules(cr["rules"], "clusterkopfpeerings")
    (crb,) = peering_rules(docs, "ClusterRoleBinding")
    assert crb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                              "name": "tm-tidemark-operator-peering"}
    assert not peering_rules(docs, "Role") and not peering_rules(docs, "RoleBinding")
    assert "--all-namespaces" in deployment(docs)["spec"]["template"]["spec"]["containers"][0]["args"]


def test_chart_lints_with_peering(tmp_path: Path) -> None:
    for extra in ([], ["--set", "operator.watchAllNamespaces=true"]):
        assert "0 chart(s) failed" in helm(tmp_path, "lint", "--strict", str(CHART), *extra).stdout


# -- the CLI: standalone by default, mandatory peering with --peering --------------------------

@pytest.fixture(autouse=True)
def _global_logging() -> Iterator[None]:
    """`operator run` configures the root logger and structlog: put them back."""
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)
    structlog.reset_defaults()


def _run_kwargs(monkeypatch: pytest.MonkeyPatch, *args: str) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kw: seen.update(kw))
    res = CliRunner().invoke(cli.operator, ["run", "--metrics-port", "0", *args])
    assert res.exit_code == 0, res.output
    return seen


def test_cli_is_standalone_without_peering(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = _run_kwargs(monkeypatch, "-n", "ns1")
    assert kw["standalone"] is True and kw["peering_name"] is None and kw["priority"] is None


def test_cli_peering_is_mandatory_with_a_priority_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    kw = _run_kwargs(monkeypatch, "-n", "ns1", "-n", "ns2", "--peering", "p")
    # peering_name makes kopf's peering mandatory: the process starts paused until it
    # has seen the peers (no double processing while it looks)
    assert kw["standalone"] is False and kw["peering_name"] == "p" and kw["clusterwide"] is False
    assert isinstance(kw["priority"], int) and kw["memo"]["namespaces"] == ["ns1", "ns2"]
    assert _run_kwargs(monkeypatch, "-A", "--peering", "p", "--priority", "7")["priority"] == 7


def test_cli_refuses_priority_without_peering() -> None:
    res = CliRunner().invoke(cli.operator, ["run", "-n", "x", "--metrics-port", "0", "--priority", "3"])
    assert res.exit_code != 0 and "--priority needs --peering" in res.output


# -- priorities and pauses -------------------------------------------------------------------

def test_the_earlier_peer_has_the_higher_priority_and_ties_are_unlikely() -> None:
    old, new = ha.default_priority(1_800_000_000.0), ha.default_priority(1_800_000_000.002)
    assert old > new  # a newcomer never preempts the running leader
    same = {ha.default_priority(1_800_000_000.0) for _ in range(50)}
    assert len(same) > 40  # started in the same millisecond: the random part decides
    assert all(abs(p) < 2 ** 53 for p in same | {ha.default_priority()})


def test_a_paused_peer_forgets_its_clocks_before_its_first_pass() -> None:
    memo: dict[str, Any] = {}
    assert not ha.stale_since_last_pass(memo, 1.0, now=100.0)  # first pass ever: nothing to forget
    ha.mark_pass(memo, now=100.0)
    assert not ha.stale_since_last_pass(memo, 1.0, now=100.0 + ha.RESUME_GAP_MIN_S - 1)
    assert ha.stale_since_last_pass(memo, 1.0, now=100.0 + ha.RESUME_GAP_MIN_S + 1)
    # a long interval is no pause
    assert not ha.stale_since_last_pass(memo, 20.0, now=100.0 + 90)
    st = ClusterState()
    st.unhealthy_since["demo-zone-a-0"] = 1.0
    st.known_repairs[3] = 7
    st.applied[("demo-zone-a-0", 3)] = "1:x"
    st.lease_seen = LeaseSeen("w", "1", 1.0, 10.0)
    st.evicted_writers.add("w")
    st.backup_block = {"target": "s3://b"}
    ha.forget_stale(st)
    assert not st.unhealthy_since and not st.known_repairs and not st.applied
    assert st.lease_seen is None and not st.evicted_writers
    assert st.backup_block == {"target": "s3://b"}  # a cache of the store's status, re-polled anyway


def test_peering_lifetime_leaves_kopfs_renewal_margin() -> None:
    # kopf renews every max(1, lifetime - randint(5, 10)) s: from 10 on, each renewal
    # has 5-10 s to land before the record expires (else the standby would take over)
    assert ha.LIFETIME >= 10 and ha.resume_gap(3.0) > ha.LIFETIME


class _FakeCustom:
    def __init__(self, status: int | None) -> None:
        self.status = status
        self.made: list[tuple[Any, ...]] = []

    def _create(self, *args: Any, **_: Any) -> None:
        if self.status is not None:
            raise ApiException(status=self.status)
        self.made.append(args)

    create_cluster_custom_object = create_namespaced_custom_object = _create


@pytest.mark.parametrize("status", [None, 409])
def test_each_peer_makes_the_peering_object_it_needs(monkeypatch: pytest.MonkeyPatch, status: int | None) -> None:
    fake = _FakeCustom(status)
    monkeypatch.setattr(ha.client, "CustomObjectsApi", lambda _api=None: fake)
    made = ha.ensure_peering("p", False, ["a", "b"])
    assert made == ([] if status else ["a", "b"])  # 409: another peer made it first
    if status is None:
        assert [(a[2], a[3], a[4]["kind"], a[4]["metadata"]) for a in fake.made] == [
            ("a", "kopfpeerings", "KopfPeering", {"name": "p", "namespace": "a"}),
            ("b", "kopfpeerings", "KopfPeering", {"name": "p", "namespace": "b"})]
        fake.made.clear()
        assert ha.ensure_peering("p", True, []) == [""]
        assert fake.made[0][2] == "clusterkopfpeerings" and fake.made[0][3]["kind"] == "ClusterKopfPeering"


def test_a_missing_peering_crd_stops_the_operator_with_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ha.client, "CustomObjectsApi", lambda _api=None: _FakeCustom(404))
    with pytest.raises(kopf.PermanentError, match="KopfPeering CRD"):
        ha.ensure_peering("p", False, ["a"])


async def test_the_first_pass_after_a_pause_forgets_the_stale_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """handlers._run: a pass soon after the last keeps the cluster's state; one after a
    gap (this process was a paused peer) starts from a clean one."""
    fresh = {"metadata": {"uid": "u1", "creationTimestamp": None}, "status": {}}
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "c", "uid": "u1"}, "spec": {}})
    memo = kopf.Memo(context=SimpleNamespace(kube=SimpleNamespace(cluster=lambda _ns, _name: fresh)),
                     interval=1.0)
    seen: list[dict[str, float]] = []

    async def reconcile(_ctx: Any, state: ClusterState, *_: Any) -> dict[str, Any]:
        seen.append(dict(state.unhealthy_since))
        state.unhealthy_since["demo-zone-a-0"] = 1.0
        return {}

    monkeypatch.setattr(handlers, "reconcile", reconcile)
    for _ in range(2):
        await handlers._run(body, kopf.Patch(), memo, {}, "timer", {})  # type: ignore[arg-type]
    memo[ha.LAST_PASS_KEY] -= ha.RESUME_GAP_MIN_S + 1
    await handlers._run(body, kopf.Patch(), memo, {}, "timer", {})  # type: ignore[arg-type]
    assert seen == [{}, {"demo-zone-a-0": 1.0}, {}]


@pytest.mark.parametrize(("reason", "forgets"), [(kopf.DaemonStoppingReason.OPERATOR_PAUSING, True),
                                                 (kopf.DaemonStoppingReason.OPERATOR_EXITING, False),
                                                 (kopf.DaemonStoppingReason.RESOURCE_DELETED, False)])
async def test_a_pausing_peer_forgets_the_cluster_and_its_gauges(
        monkeypatch: pytest.MonkeyPatch, reason: kopf.DaemonStoppingReason, forgets: bool) -> None:
    setter: aioenums.FlagSetter[kopf.DaemonStoppingReason] = aioenums.FlagSetter()
    memo = kopf.Memo()
    handlers.cluster_state(memo).unhealthy_since["demo-zone-a-0"] = 1.0
    forgotten: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers.metrics, "forget", lambda ns, name: forgotten.append((ns, name)))
    body = kopf.Body({"metadata": {"namespace": "ns", "name": "demo", "uid": "u1"}, "spec": {}})
    task = asyncio.create_task(handlers.pause_daemon(aioenums.AsyncFlagWaiter(setter), body, memo))
    await asyncio.sleep(0.05)
    assert not task.done()  # it waits for kopf to stop it
    setter.set(reason)
    await asyncio.wait_for(task, 5)
    assert (not handlers.cluster_state(memo).unhealthy_since) is forgets
    assert forgotten == ([("ns", "demo")] if forgets else [])
