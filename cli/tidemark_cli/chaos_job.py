"""The verifying workload of `tidemark chaos --cluster` as a Job in the cluster, and what
its logs say.

The workload runs where an application runs (pod IPs are not reachable from outside a
kind cluster): `tidemark workload --from-cluster NAME --verify --json --progress 1` in
the cluster's own image, with a ServiceAccount that may read the placement ConfigMap and
the pods, labelled `tidemark.dev/node-client=NAME` (the cluster's NetworkPolicy admits it
to the storage nodes), and the cluster's writer token mounted (from its node-auth Secret: the token
only, never the key; the ServiceAccount reads no Secrets) with the nodes' CA certificate
(from its node-tls Secret: ca.crt only). Objects this module creates
are listed so that only they are deleted.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from tidemark_operator import nodekeys, nodetls
from tidemark_operator.model import NODE_CLIENT_LABEL
from tidemark_protocol.node_auth import Role

ACCOUNT = "tidemark-chaos-workload"


@dataclass
class WorkloadJob:
    cluster: str
    namespace: str
    image: str
    seconds: float
    name: str = field(default_factory=lambda: f"tidemark-chaos-{uuid.uuid4().hex[:6]}")
    created: list[tuple[str, str]] = field(default_factory=list)  # (kind, name) made by us

    def manifest(self) -> dict[str, Any]:
        tokens_volume, tokens_mount = nodekeys.token_volume(self.cluster, [Role.WRITER])
        ca_volume, ca_mount = nodetls.ca_volume(self.cluster)  # the nodes' CA certificate alone
        container = {
            "name": "workload", "image": self.image, "imagePullPolicy": "IfNotPresent",
            "command": ["tidemark", "workload", "--from-cluster", self.cluster, "--seconds", str(self.seconds),
                        "--concurrency", "16", "--verify", "--json", "--progress", "1",
                        "--node-tokens-dir", nodekeys.TOKENS_MOUNT, "--node-ca-file", nodetls.ca_path()],
            "securityContext": {"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False,
                                "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, tokens_mount, ca_mount],
        }
        pod = {"serviceAccountName": ACCOUNT, "restartPolicy": "Never", "containers": [container],
               # fsGroup: the token file (0400) is made group-readable for the non-root user
               "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                                   "seccompProfile": {"type": "RuntimeDefault"}},
               "volumes": [{"name": "tmp", "emptyDir": {}}, tokens_volume, ca_volume]}
        return {"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": self.name, "labels": {"app.kubernetes.io/name": "tidemark-chaos"}},
                "spec": {"backoffLimit": 0, "template": {"metadata": {"labels": {"job-name": self.name,
                                                                                    NODE_CLIENT_LABEL: self.cluster}},
                                                         "spec": pod}}}

    def _create(self, kind: str, name: str, make: Any, body: dict[str, Any]) -> None:
        try:
            make(self.namespace, body, _request_timeout=10)
            self.created.append((kind, name))
        except ApiException as exc:
            if exc.status != 409:  # one left by an earlier run (or the user's own) is used as is
                raise

    def start(self) -> None:
        core, rbac = client.CoreV1Api(), client.RbacAuthorizationV1Api()
        self._create("ServiceAccount", ACCOUNT, core.create_namespaced_service_account,
                     {"metadata": {"name": ACCOUNT}})
        self._create("Role", ACCOUNT, rbac.create_namespaced_role, {
            "metadata": {"name": ACCOUNT},
            "rules": [{"apiGroups": [""], "resources": ["configmaps", "pods"], "verbs": ["get", "list"]}]})
        self._create("RoleBinding", ACCOUNT, rbac.create_namespaced_role_binding, {
            "metadata": {"name": ACCOUNT},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ACCOUNT},
            "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": self.namespace}]})
        client.BatchV1Api().create_namespaced_job(self.namespace, self.manifest(), _request_timeout=10)
        self.created.append(("Job", self.name))

    def pod(self) -> Any | None:
        pods = client.CoreV1Api().list_namespaced_pod(self.namespace, label_selector=f"job-name={self.name}",
                                                      _request_timeout=10).items
        return pods[0] if pods else None

    def finished(self) -> bool:
        st = client.BatchV1Api().read_namespaced_job_status(self.name, self.namespace, _request_timeout=10).status
        return bool(st.succeeded or st.failed)

    def logs(self) -> str:
        pod = self.pod()
        if pod is None:
            return ""
        # Raw bytes: with content preloaded the client parses log text that looks like JSON
        # into a dict and hands back its repr.
        resp = client.CoreV1Api().read_namespaced_pod_log(pod.metadata.name, self.namespace,
                                                          _preload_content=False, _request_timeout=30)
        return str(resp.data.decode("utf-8", "replace"))

    def delete(self) -> None:
        core, rbac, batch = client.CoreV1Api(), client.RbacAuthorizationV1Api(), client.BatchV1Api()
        deleters = {"Job": lambda n: batch.delete_namespaced_job(n, self.namespace, propagation_policy="Background",
                                                                 _request_timeout=10),
                    "RoleBinding": lambda n: rbac.delete_namespaced_role_binding(n, self.namespace,
                                                                                 _request_timeout=10),
                    "Role": lambda n: rbac.delete_namespaced_role(n, self.namespace, _request_timeout=10),
                    "ServiceAccount": lambda n: core.delete_namespaced_service_account(n, self.namespace,
                                                                                       _request_timeout=10)}
        for kind, name in reversed(self.created):
            try:
                deleters[kind](name)
            except ApiException as exc:
                if exc.status != 404:
                    raise
        self.created.clear()


@dataclass
class WorkloadReport:
    progress: list[dict[str, Any]]  # {"t": unix seconds, "commits", "window_commits", "p99_ms"}
    summary: dict[str, Any] | None  # the workload's --json line (acked, lost, verified, ...)
    error: str | None = None  # its {"error": ...} line when it failed


def parse_logs(text: str) -> WorkloadReport:
    progress: list[dict[str, Any]] = []
    summary: dict[str, Any] | None = None
    error: str | None = None
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        if "progress" in doc:
            progress.append(doc["progress"])
        elif "verified" in doc:
            summary = doc
        elif isinstance(doc.get("error"), str):
            error = doc["error"]
    return WorkloadReport(progress, summary, error)
