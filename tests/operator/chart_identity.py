"""The operator's identity on the rig, as the chart gives it: the chart's ServiceAccount
with exactly the chart's RBAC (`helm template` rendered for the test's namespace, the
namespaced install), and a kubeconfig holding a TokenRequest token of that account. The
operator tests run the operator with it, never with the rig's admin credentials (#14)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, utils

from tidemark_rig.control_plane import ControlPlane
from tidemark_rig.fixtures import helm
from tidemark_rig.pod_runner import write_token_kubeconfig

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "tidemark"
RBAC_KINDS = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
TOKEN_SECONDS = 4 * 3600  # outlives any test module


@dataclass
class ChartIdentity:
    ns: str
    release: str
    service_account: str
    kubeconfig: Path
    peering: str  # the one KopfPeering the chart's Role lets the operator patch
    docs: list[dict[str, Any]] = field(default_factory=list)  # what was created

    def role(self) -> dict[str, Any]:
        return next(d for d in self.docs if d["kind"] == "Role" and "peering" not in d["metadata"]["name"])


def rbac_docs(tmp_path: Path, release: str, ns: str) -> list[dict[str, Any]]:
    """The chart's ServiceAccount and RBAC objects for a namespaced install in NS."""
    out = helm(tmp_path, "template", release, str(CHART), "--namespace", ns)
    docs = [d for d in yaml.safe_load_all(out) if d and d["kind"] in RBAC_KINDS]
    for d in docs:
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            d["metadata"]["namespace"] = ns
    return docs


def kubeconfig_for(api: client.ApiClient, ns: str, sa: str, path: Path) -> Path:
    """A kubeconfig authenticating as NS/SA with a TokenRequest token."""
    tr = client.CoreV1Api(api).create_namespaced_service_account_token(
        sa, ns, {"spec": {"expirationSeconds": TOKEN_SECONDS}}, _request_timeout=10)
    return write_token_kubeconfig(api.configuration, sa, ns, tr.status.token, path)


def install(rig: ControlPlane, tmp_path: Path, ns: str,
            edit: Callable[[list[dict[str, Any]]], None] = lambda docs: None) -> ChartIdentity:
    """Create the chart's ServiceAccount and RBAC in NS (EDIT may change the rendered
    objects first: a test taking a verb away) and a kubeconfig for that account."""
    release = f"tm-{ns}"
    docs = rbac_docs(tmp_path, release, ns)
    edit(docs)
    api = rig.api_client()
    for d in docs:
        utils.create_from_dict(api, d, namespace=d["metadata"].get("namespace"))
    sa = next(d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount")
    kubeconfig = kubeconfig_for(api, ns, sa, tmp_path / "operator-kubeconfig")
    return ChartIdentity(ns, release, sa, kubeconfig, f"{release}-tidemark-operator", docs)


def remove(rig: ControlPlane, ident: ChartIdentity) -> None:
    """Delete the cluster-scoped objects INSTALL made (the namespaced ones go with it)."""
    rbac = client.RbacAuthorizationV1Api(rig.api_client())
    for d in ident.docs:
        with contextlib.suppress(Exception):
            if d["kind"] == "ClusterRole":
                rbac.delete_cluster_role(d["metadata"]["name"], _request_timeout=10)
            elif d["kind"] == "ClusterRoleBinding":
                rbac.delete_cluster_role_binding(d["metadata"]["name"], _request_timeout=10)
