"""The operator's Kubernetes API client: typed reads and writes of the objects it manages
(synchronous: the kubernetes client; async code calls it through asyncio.to_thread)."""

from __future__ import annotations

from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .model import GROUP, PLURAL, VERSION, ZONE_LABEL
from .placement import Conflict

TIMEOUT = 10  # seconds, every API request


def load_config(kubeconfig: str | None = None) -> None:
    """Configure the kubernetes client: KUBECONFIG if given, else in-cluster credentials,
    else the default kubeconfig ($KUBECONFIG, ~/.kube/config)."""
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig)
        return
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def connection_info(trust_env: bool) -> kopf.ConnectionInfo:
    """kopf's own credentials from the kubernetes client's configuration (load_config),
    as kopf.login_via_client derives them, so kopf and the operator's calls use the same
    cluster and identity."""
    cfg = client.Configuration.get_default_copy()
    header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
    parts = header.split(" ", 1) if header else []
    scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    return kopf.ConnectionInfo(
        server=cfg.host, ca_path=cfg.ssl_ca_cert, insecure=not cfg.verify_ssl,
        username=cfg.username or None, password=cfg.password or None, scheme=scheme, token=token,
        certificate_path=cfg.cert_file, private_key_path=cfg.key_file, trust_env=trust_env)


class Kube:
    def __init__(self, api: client.ApiClient | None = None) -> None:
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)

    def ser(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def ready_nodes_by_zone(self) -> dict[str, int]:
        """zone -> Ready, schedulable nodes carrying that zone label."""
        out: dict[str, int] = {}
        for n in self.core.list_node(_request_timeout=TIMEOUT).items:
            ready = any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))
            zone = (n.metadata.labels or {}).get(ZONE_LABEL)
            if ready and zone and not n.spec.unschedulable:
                out[zone] = out.get(zone, 0) + 1
        return out

    def cluster(self, ns: str, name: str) -> dict[str, Any] | None:
        """An AuroraCluster as a plain dict (None: it does not exist)."""
        try:
            return self.ser(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, name, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read(self, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        fn = {"Service": self.core.read_namespaced_service,
              "StatefulSet": self.apps.read_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.read_namespaced_pod_disruption_budget,
              "ConfigMap": self.core.read_namespaced_config_map}[kind]
        try:
            return self.ser(fn(name, ns, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj: dict[str, Any]) -> None:
        """Create OBJ; Conflict if it exists already."""
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        fn = {"Service": self.core.create_namespaced_service,
              "StatefulSet": self.apps.create_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.create_namespaced_pod_disruption_budget,
              "ConfigMap": self.core.create_namespaced_config_map}[kind]
        try:
            fn(ns, obj, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{kind} {obj['metadata']['name']} exists already") from exc
            raise

    def patch(self, obj: dict[str, Any]) -> None:
        """Strategic-merge patch OBJ (kind, name and namespace identify it)."""
        ns, kind, name = obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]
        fn = {"Service": self.core.patch_namespaced_service,
              "StatefulSet": self.apps.patch_namespaced_stateful_set,
              "PodDisruptionBudget": self.policy.patch_namespaced_pod_disruption_budget}[kind]
        fn(name, ns, obj, _request_timeout=TIMEOUT)

    def replace_config_map(self, obj: dict[str, Any]) -> None:
        """Replace a ConfigMap carrying the resourceVersion that was read; Conflict when it
        changed since (compare-and-swap)."""
        meta = obj["metadata"]
        try:
            self.core.replace_namespaced_config_map(meta["name"], meta["namespace"], obj,
                                                    _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"ConfigMap {meta['name']} changed concurrently") from exc
            raise
