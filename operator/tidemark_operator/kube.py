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
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)
        self.networking = client.NetworkingV1Api(self.api)

    def _fn(self, verb: str, kind: str) -> Any:
        """The namespaced client call VERB (read/create/patch) for KIND."""
        api, noun = {"Service": (self.core, "service"), "StatefulSet": (self.apps, "stateful_set"),
                     "Deployment": (self.apps, "deployment"), "ConfigMap": (self.core, "config_map"),
                     "PodDisruptionBudget": (self.policy, "pod_disruption_budget"),
                     "Secret": (self.core, "secret"), "ServiceAccount": (self.core, "service_account"),
                     "Role": (self.rbac, "role"), "RoleBinding": (self.rbac, "role_binding"),
                     "Lease": (self.coordination, "lease"),
                     "NetworkPolicy": (self.networking, "network_policy")}[kind]
        return getattr(api, f"{verb}_namespaced_{noun}")

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

    def lost_nodes(self) -> set[str]:
        """Nodes whose Ready condition is not True (NotReady or Unknown: unreachable)."""
        return {n.metadata.name for n in self.core.list_node(_request_timeout=TIMEOUT).items
                if not any(c.type == "Ready" and c.status == "True" for c in (n.status.conditions or []))}

    def force_delete_pod(self, name: str, ns: str) -> None:
        """Delete now (grace 0): the pod's node is gone and will never confirm it."""
        try:
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def delete_pod(self, name: str, ns: str) -> None:
        """Delete with the pod's own grace period: its processes get SIGTERM first."""
        try:
            self.core.delete_namespaced_pod(name, ns, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

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
        try:
            return self.ser(self._fn("read", kind)(name, ns, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def exists(self, kind: str, name: str, ns: str) -> bool:
        """Without returning the object (a Secret's data stays out of our memory)."""
        try:
            resp = self._fn("read", kind)(name, ns, _request_timeout=TIMEOUT, _preload_content=False)
            resp.drain_conn()  # discarded unread, and the pooled connection stays usable
            resp.release_conn()
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise

    def delete(self, kind: str, name: str, ns: str) -> None:
        """Delete; one already gone is fine."""
        try:
            self._fn("delete", kind)(name, ns, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def create(self, obj: dict[str, Any]) -> None:
        """Create OBJ; Conflict if it exists already."""
        ns, kind = obj["metadata"]["namespace"], obj["kind"]
        try:
            self._fn("create", kind)(ns, obj, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{kind} {obj['metadata']['name']} exists already") from exc
            raise

    def patch(self, obj: dict[str, Any]) -> None:
        """Strategic-merge patch OBJ (kind, name and namespace identify it)."""
        ns, kind, name = obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]
        self._fn("patch", kind)(name, ns, obj, _request_timeout=TIMEOUT)

    def replace(self, obj: dict[str, Any]) -> None:
        """Replace OBJ carrying the resourceVersion that was read; Conflict when it changed
        since (compare-and-swap)."""
        ns, kind, name = obj["metadata"]["namespace"], obj["kind"], obj["metadata"]["name"]
        try:
            self._fn("replace", kind)(name, ns, obj, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(f"{kind} {name} changed concurrently") from exc
            raise

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
