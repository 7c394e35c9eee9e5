"""The chart: lint, render (namespaced and cluster-wide), server-side dry-run on the rig."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.fixtures import helm, kubectl_path
from tidemark_rig.versions import bin_path

pytestmark = [pytest.mark.rig, pytest.mark.operator]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tidemark"


def test_chart_crd_is_the_repo_crd() -> None:
    name = "auroraclusters.tidemark.dev.yaml"
    assert (CHART / "files" / "crds" / name).read_text() == (ROOT / "crds" / name).read_text()


def test_chart_renders_crds_kept_on_uninstall_unless_crds_create_false(tmp_path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(helm(tmp_path, "template", "tm", str(CHART))) if d]
    crds = [d for d in docs if d["kind"] == "CustomResourceDefinition"]
    assert {c["metadata"]["name"] for c in crds} == {"auroraclusters.tidemark.dev", "aurorasnapshots.tidemark.dev",
                                                     "clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert all(c["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep" for c in crds)
    off = helm(tmp_path, "template", "tm", str(CHART), "--set", "crds.create=false")
    assert "CustomResourceDefinition" not in off


def test_chart_passes_its_image_and_log_level_to_the_operator(tmp_path: Path) -> None:
    out = helm(tmp_path, "template", "tm", str(CHART), "--set-string", "image.tag=7", "--set", "operator.logLevel=debug",
               "--set", "imagePullSecrets[0].name=regcred")
    dep = next(d for d in yaml.safe_load_all(out) if d and d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    assert pod["containers"][0]["image"] == "tidemark:7" and "--image=tidemark:7" in args
    assert "--log-level=debug" in args and pod["imagePullSecrets"] == [{"name": "regcred"}]


def test_chart_refuses_values_its_schema_does_not_allow(tmp_path: Path) -> None:
    for bad in ("operator.logLevel=loud", "operator.metricsPort=-1", "imagePullPolicy=Always"):
        res = subprocess.run([str(bin_path("helm")), "template", "tm", str(CHART), "--set", bad],
                             capture_output=True, text=True, timeout=60,
                             env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        assert res.returncode != 0 and "schema" in res.stderr, (bad, res.stderr)


def test_chart_lints(tmp_path: Path) -> None:
    assert "0 chart(s) failed" in helm(tmp_path, "lint", "--strict", str(CHART))


@pytest.mark.parametrize("values", [[], ["--set", "operator.watchAllNamespaces=true"]])
def test_chart_renders_least_privilege_and_server_accepts_it(
        tmp_path: Path, rig_cluster: ControlPlane, values: list[str]) -> None:
    ns = "chart-" + uuid.uuid4().hex[:6]
    out = helm(tmp_path, "template", "tm", str(CHART), "--namespace", ns,
               "--set", "image.tag=dev", *values)
    docs = [d for d in yaml.safe_load_all(out) if d]
    kinds = {d["kind"] for d in docs}
    assert {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "Deployment"} <= kinds
    dep = next(d for d in docs if d["kind"] == "Deployment")
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["image"] == "tidemark:dev" and c["command"] == ["tidemark", "operator", "run"]
    cluster_role = next(d for d in docs if d["kind"] == "ClusterRole")
    verbs = {v for r in cluster_role["rules"] for v in r["verbs"]}
    if values:
        assert "--all-namespaces" in c["args"] and "Role" not in kinds
    else:
        assert f"--namespace={ns}" in c["args"] and "Role" in kinds
        assert verbs == {"get", "list", "watch"}  # cluster-wide: read-only
    for d in docs:
        for r in d.get("rules", []):
            assert "*" not in r["verbs"] and "*" not in r["resources"]

    kubectl = kubectl_path()
    core = rig_cluster.core()
    core.create_namespace({"metadata": {"name": ns}}, _request_timeout=10)
    try:
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(out)
        res = subprocess.run([kubectl, "--kubeconfig", str(rig_cluster.kubeconfig), "apply",
                              "--dry-run=server", "-f", str(rendered)],
                             capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        assert "deployment.apps/tm-tidemark-operator created (server dry run)" in res.stdout
    finally:
        core.delete_namespace(ns, _request_timeout=10)
