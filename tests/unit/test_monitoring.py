"""Monitoring that ships (docs/monitoring.md): the chart's metrics Service, ServiceMonitor,
PodMonitor, PrometheusRule and Grafana dashboard ConfigMap; the dashboard and the alert
rules name only metrics the components really export; the rules pass `promtool`."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helmrun import helm
from monitoring_exports import (
    STATUS,
    exposition_names,
    instance_exposition,
    node_exposition,
    operator_exposition,
    promql_metric_names,
)
from prometheus_client.parser import text_string_to_metric_families

from tidemark_operator.backup_health import backup_health
from tidemark_operator.backupspec import BackupSpec
from tidemark_operator.instance_resources import instance_objects
from tidemark_operator.metric_samples import GAUGES, samples
from tidemark_operator.reconcile import finish_status
from tidemark_operator.resources import desired_objects
from tidemark_operator.spec import parse_spec
from tidemark_operator.state import ClusterState
from tidemark_rig.versions import bin_path

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tidemark"
DASHBOARD = CHART / "dashboards" / "tidemark.json"
MONITORING_APIS = [f"--api-versions=monitoring.coreos.com/v1/{k}"
                   for k in ("ServiceMonitor", "PodMonitor", "PrometheusRule")]
ALL_ON = ["--set", "metrics.serviceMonitor.enabled=true,metrics.podMonitor.enabled=true,"
          "metrics.prometheusRule.enabled=true,metrics.grafanaDashboard.enabled=true"]




def render(tmp_path: Path, *args: str) -> dict[str, dict[str, Any]]:
    out = helm(tmp_path, "template", "tm", str(CHART), "--namespace", "tm-system", *args).stdout
    return {d["kind"]: d for d in yaml.safe_load_all(out) if d}


def rule_groups(tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = render(tmp_path, *MONITORING_APIS, *ALL_ON, *args)["PrometheusRule"]["spec"]["groups"]
    return groups


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    exprs += [v["query"]["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


@pytest.fixture(scope="module")
def scraped(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """/metrics of a storage node (a real process), of the operator (served on loopback)
    and of an instance's telemetry."""
    return {"node": node_exposition(tmp_path_factory.mktemp("node")),
            "operator": operator_exposition(STATUS), "instance": instance_exposition()}


@pytest.fixture(scope="module")
def exported(scraped: dict[str, str]) -> set[str]:
    """Every sample name the components export."""
    names = {n for text in scraped.values() for n in exposition_names(text)}
    assert "tidemark_sync_seconds_bucket" in names and "tidemark_node_disk_bytes" in names, sorted(names)
    return names


@pytest.mark.process
@pytest.mark.timeout(180)
def test_node_exports_its_state_per_segment(scraped: dict[str, str]) -> None:
    values = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for fam in text_string_to_metric_families(scraped["node"]) for s in fam.samples}
    seg = [(k, v) for k, v in values.items() if k[0] == "tidemark_segment_scl"]
    assert len(seg) == 1 and dict(seg[0][0][1])["pg"] == "0" and seg[0][1] == 2, seg
    disk = [v for k, v in values.items() if k[0] == "tidemark_node_disk_bytes"]
    assert disk and disk[0] > 0
    assert any(k[0] == "tidemark_received_bytes_total" and v > 0 for k, v in values.items())


# -- the chart ----------------------------------------------------------------------------------
@pytest.mark.unit
def test_defaults_render_only_the_metrics_service(tmp_path: Path) -> None:
    kinds = render(tmp_path)
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"} & set(kinds)
    svc = kinds["Service"]
    assert svc["spec"]["selector"] == {"app.kubernetes.io/instance": "tm", "app.kubernetes.io/component": "operator"}
    assert svc["spec"]["ports"] == [{"name": "metrics", "port": 9090, "targetPort": "metrics", "protocol": "TCP"}]
    pod = kinds["Deployment"]["spec"]["template"]
    assert {"name": "metrics", "containerPort": 9090} in pod["spec"]["containers"][0]["ports"]
    assert all(pod["metadata"]["labels"][k] == v for k, v in svc["spec"]["selector"].items())
    assert "Service" not in render(tmp_path, "--set", "metrics.service.enabled=false")
    assert "Service" not in render(tmp_path, "--set", "operator.metricsPort=0")


@pytest.mark.unit
def test_monitors_need_both_the_flag_and_the_api(tmp_path: Path) -> None:
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(render(tmp_path, *ALL_ON))
    assert not {"ServiceMonitor", "PodMonitor", "PrometheusRule"} & set(render(tmp_path, *MONITORING_APIS))
    kinds = render(tmp_path, *MONITORING_APIS, *ALL_ON, "--set", "metrics.serviceMonitor.labels.release=prom")
    sm, pm = kinds["ServiceMonitor"], kinds["PodMonitor"]
    assert sm["apiVersion"] == pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prom"
    svc = kinds["Service"]
    assert all(svc["metadata"]["labels"][k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["tm-system"]}
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["honorLabels"] is True
    # storage pods' `node` port and instance pods' `admin` port (operator/tidemark_operator/model.py)
    assert [e["port"] for e in pm["spec"]["podMetricsEndpoints"]] == ["node", "admin"]
    # both https (node TLS, instance TLS: #14), each cluster's CA out of the monitor's reach
    assert all(e["scheme"] == "https" and e["tlsConfig"] == {"insecureSkipVerify": True}
               for e in pm["spec"]["podMetricsEndpoints"])
    exprs = {e["key"]: e for e in pm["spec"]["selector"]["matchExpressions"]}
    assert exprs["app.kubernetes.io/component"]["values"] == ["storage", "instance"]
    assert pm["spec"]["namespaceSelector"] == {"matchNames": ["tm-system"]}
    relabel = {r["targetLabel"] for r in pm["spec"]["podMetricsEndpoints"][0]["relabelings"]}
    assert {"cluster", "zone", "component"} <= relabel
    wide = render(tmp_path, *MONITORING_APIS, *ALL_ON, "--set", "operator.watchAllNamespaces=true")
    assert wide["PodMonitor"]["spec"]["namespaceSelector"] == {"any": True}


@pytest.mark.unit
def test_storage_and_instance_pods_name_the_scraped_ports() -> None:
    owner = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
             "metadata": {"name": "demo", "namespace": "ns", "uid": "u"}}
    spec = parse_spec({"nodesPerZone": 2, "instances": 2, "image": "tidemark:dev"})
    pods = [o["spec"]["template"] for o in [*desired_objects("demo", "ns", ["a", "b", "c"], spec, owner),
                                            *instance_objects("demo", "ns", spec, owner)]
            if o["kind"] in ("StatefulSet", "Deployment")]
    ports = {p["metadata"]["labels"]["app.kubernetes.io/component"]:
             {pt["name"] for c in p["spec"]["containers"] for pt in c.get("ports", [])} for p in pods}
    assert "node" in ports["storage"] and "admin" in ports["instance"]


@pytest.mark.unit
def test_dashboard_configmap_carries_the_dashboard_and_the_sidecar_label(tmp_path: Path) -> None:
    cm = render(tmp_path, "--set", "metrics.grafanaDashboard.enabled=true,metrics.grafanaDashboard.namespace=mon")
    cfg = cm["ConfigMap"]
    assert cfg["metadata"]["labels"]["grafana_dashboard"] == "1" and cfg["metadata"]["namespace"] == "mon"
    assert json.loads(cfg["data"]["tidemark.json"]) == json.loads(DASHBOARD.read_text())


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["metrics.nope=1", "metrics.podMonitor.interval=often",
                                 "metrics.prometheusRule.degradedMinutes=0", "metrics.grafanaDashboard.x=1"])
def test_schema_refuses_unknown_or_bad_monitoring_values(tmp_path: Path, bad: str) -> None:
    res = helm(tmp_path, "template", "tm", str(CHART), "--set", bad, ok=False)
    assert res.returncode != 0 and "schema" in res.stderr, res.stderr


@pytest.mark.unit
def test_chart_lints_with_monitoring_on(tmp_path: Path) -> None:
    out = helm(tmp_path, "lint", "--strict", str(CHART), *ALL_ON).stdout
    assert "0 chart(s) failed" in out


@pytest.mark.unit
def test_rule_thresholds_come_from_values(tmp_path: Path) -> None:
    rules = {r["alert"]: r for g in rule_groups(tmp_path, "--set", "metrics.prometheusRule.degradedMinutes=7,"
                                                "metrics.prometheusRule.backupUploadStaleMinutes=20")
             for r in g["rules"]}
    assert {"TidemarkWriteQuorumLost", "TidemarkPGDegraded", "TidemarkBackupUploadStale",
            "TidemarkRestorableWindowShort", "TidemarkReplicaLagHigh"} <= set(rules)
    assert rules["TidemarkPGDegraded"]["for"] == "7m"
    assert rules["TidemarkBackupUploadStale"]["expr"].endswith("> 1200")
    assert "{{ $labels.pg }}" in rules["TidemarkWriteQuorumLost"]["annotations"]["summary"]


# -- names ------------------------------------------------------------------------------------
@pytest.mark.unit
def test_promql_name_extraction() -> None:
    expr = ('histogram_quantile(0.99, sum by (le, pod) (rate(a_bucket{cluster="$cluster", x=~"y"}[$__rate_interval])))'
            ' / on (namespace) group_left b - time() and c offset 5m > 3')
    assert promql_metric_names(expr) == {"a_bucket", "b", "c"}
    assert promql_metric_names('label_values(d{namespace="$namespace"}, cluster)') == {"d"}


@pytest.mark.unit
def test_operator_gauges_are_one_per_quantity_named_by_unit() -> None:
    got = samples("ns", "demo", STATUS, "2026-01-01T00:00:00Z")
    assert {name for name, _, _ in got} == set(GAUGES)  # the sample status exercises every gauge
    assert all("what" not in labels for _, _, labels in got)
    for name, (unit, _) in GAUGES.items():
        suffix = {"s": "_seconds", "ms": "_milliseconds", "By": "_bytes", "": ""}[unit]
        assert name.endswith(suffix), name  # the exporter then adds nothing: name = exported name
    by = {(n, tuple(sorted(lb.items()))): v for n, v, lb in got}
    assert by[("tidemark_cluster_pg_healthy_segments", (("cluster", "demo"), ("namespace", "ns"), ("pg", "2")))] == 5
    assert by[("tidemark_cluster_backup_restorable_window_seconds", (("cluster", "demo"), ("namespace", "ns")))] == 43200


@pytest.mark.unit
def test_backup_healthy_condition() -> None:
    block = dict(STATUS["backup"])
    now = 1767268801.0 + 60  # a minute after lastSuccessfulUpload
    assert backup_health(block, now)[:2] == (True, "UploadsCurrent")
    assert backup_health(block, now + 3600)[:2] == (False, "UploadStale")
    assert backup_health({**block, "lastError": "EndpointConnectionError"}, now)[:2] == (False, "BackupError")
    assert backup_health({**block, "lastSuccessfulUpload": None}, now)[:2] == (False, "NoUpload")
    assert backup_health({"state": "Active", "lastChecked": None}, now)[:2] == (False, "NotPolled")
    assert backup_health({"state": "WaitingForRestore"}, now)[0] is False
    assert backup_health(block, now)[2] == backup_health(block, now + 30)[2]  # stable: no patch per pass


def unexported(exprs: list[str], exported: set[str]) -> list[str]:
    return sorted({n for e in exprs for n in promql_metric_names(e)} - exported)


@pytest.mark.unit
def test_a_backed_up_cluster_gets_backup_healthy_and_its_retention() -> None:
    body = {"metadata": {"name": "demo", "namespace": "ns", "generation": 2},
            "spec": {"backup": {"enabled": True, "target": "s3://b/p", "credentialsSecret": "c",
                                "retentionDays": 3}}}
    backup = BackupSpec.of(parse_spec(body["spec"]).backup)
    assert backup.store is not None
    state = ClusterState(backup_block={**STATUS["backup"], "lastError": "boom"},
                         backup_of=(backup.store, backup.retention_days))
    ready = {"type": "Ready", "status": "True"}
    st = finish_status(state, body, {"conditions": [ready]}, backup, None, lambda *_: None)
    assert st["backup"]["retentionDays"] == 3
    assert st["conditions"][0] == ready
    cond = st["conditions"][1]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == \
        ("BackupHealthy", "False", "BackupError", "boom")
    fresh = finish_status(ClusterState(), body, {"conditions": [ready]}, backup, None, lambda *_: None)
    assert fresh["conditions"][1]["reason"] == "NotPolled"


@pytest.mark.process
@pytest.mark.timeout(180)
def test_every_dashboard_metric_is_exported(exported: set[str]) -> None:
    exprs = dashboard_exprs()
    assert len({n for e in exprs for n in promql_metric_names(e)}) > 20
    assert not unexported(exprs, exported), f"panels name metrics nobody exports: {unexported(exprs, exported)}"
    # the check bites: a panel naming a metric nobody exports (or the pre-suffix name)
    bad = [*exprs, "rate(tidemark_nobody_exports_total[5m])", "tidemark_received"]
    assert unexported(bad, exported) == ["tidemark_nobody_exports_total", "tidemark_received"]


@pytest.mark.process
@pytest.mark.timeout(180)
def test_every_rule_metric_is_exported(tmp_path: Path, exported: set[str]) -> None:
    exprs = [r["expr"] for g in rule_groups(tmp_path) for r in g["rules"]]
    assert not unexported(exprs, exported), f"rules name metrics nobody exports: {unexported(exprs, exported)}"


# -- promtool ---------------------------------------------------------------------------------
def promtool() -> str:
    path = bin_path("promtool")
    if not os.access(path, os.X_OK):
        missing = f"no {path}; run `tidemark dev install-bins --only promtool`"
        if os.environ.get("CI") == "true":  # CI has the rig's binaries: missing is a failure
            pytest.fail(missing)
        pytest.skip(missing)
    return str(path)


@pytest.mark.unit
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    tool = promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": rule_groups(tmp_path)}))
    res = subprocess.run([tool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


@pytest.mark.unit
def test_promtool_fires_the_alerts_as_documented(tmp_path: Path) -> None:
    """promtool's rule unit tests: quorum lost after 1m, degraded after 10m, a stale
    backup, a short window on an old cluster (not on a young one), a lagging replica."""
    tool = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups(tmp_path)}))
    (tmp_path / "test.yaml").write_text((Path(__file__).with_name("monitoring_rules_test.yaml")).read_text())
    res = subprocess.run([tool, "test", "rules", "test.yaml"], capture_output=True, text=True, timeout=60,
                         cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
