"""Which Kubernetes cluster and namespace `kubectl tidemark` talks to, chosen the way
kubectl chooses them (--kubeconfig, $KUBECONFIG, ~/.kube/config, in-cluster; --context;
--namespace or the context's namespace), and the API calls its commands share."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from urllib3.exceptions import HTTPError, MaxRetryError

from tidemark_operator.backupspec import SNAPSHOT_PLURAL
from tidemark_operator.model import CLUSTER_LABEL, GROUP, PLURAL, VERSION
from tidemark_protocol.errors import UserError
from tidemark_restore.cli import one_line_errors

TIMEOUT = 10  # seconds, every API request
IN_CLUSTER_NS = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
Command = TypeVar("Command", bound=Callable[..., Any])


class KubeError(UserError):
    """The cluster cannot be reached or refused a request (one line for the user)."""


def _api_error(exc: ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return f"the API server answered {exc.status} {exc.reason}" + (f": {message}" if message else "")


def kube_errors(command: Command) -> Command:
    """A command decorator: config, connection and API errors become one-line UserErrors."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ApiException as exc:
            raise KubeError(_api_error(exc)) from exc
        except MaxRetryError as exc:  # urllib3's long text, shortened to what went wrong
            pool = exc.pool
            why = str(exc.reason).rsplit(": ", 1)[-1].rstrip("')\"")
            raise KubeError(f"cannot reach the API server {pool.scheme}://{pool.host}:{pool.port}: {why} "
                            "(check --kubeconfig/--context)") from exc

    return one_line_errors((ConfigException, HTTPError))(run)  # type: ignore[return-value]


@dataclass
class Target:
    """A configured API client and the namespace to work in."""

    api: client.ApiClient
    namespace: str

    def __post_init__(self) -> None:
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.coordination = client.CoordinationV1Api(self.api)

    def plain(self, obj: Any) -> Any:
        return self.api.sanitize_for_serialization(obj)

    def cluster(self, name: str) -> dict[str, Any]:
        """The AuroraCluster NAME; a one-line error when it does not exist."""
        try:
            return dict(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name, _request_timeout=TIMEOUT))
        except ApiException as exc:
            if exc.status == 404:
                raise KubeError(f"AuroraCluster {name} not found in namespace {self.namespace}") from exc
            raise

    def patch_cluster(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.cluster(name)  # a clear error for a missing cluster
        return dict(self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, patch, _request_timeout=TIMEOUT))

    def snapshots(self, cluster: str | None = None) -> list[dict[str, Any]]:
        """AuroraSnapshots of the namespace (of CLUSTER only, when given), oldest first."""
        items = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, SNAPSHOT_PLURAL, _request_timeout=TIMEOUT).get("items", [])
        items = [s for s in items if cluster is None or (s.get("spec") or {}).get("cluster") == cluster]
        return sorted(items, key=lambda s: (s["metadata"].get("creationTimestamp") or "", s["metadata"]["name"]))

    def pods(self, selector: dict[str, str]) -> list[Any]:
        sel = ",".join(f"{k}={v}" for k, v in selector.items())
        return sorted(self.core.list_namespaced_pod(self.namespace, label_selector=sel,
                                                    _request_timeout=TIMEOUT).items,
                      key=lambda p: p.metadata.name)

    def events_of(self, cluster: str) -> list[Any]:
        """Events of the cluster and of everything named after it (its pods, StatefulSets,
        …), oldest first."""
        items = self.core.list_namespaced_event(self.namespace, _request_timeout=TIMEOUT).items
        mine = [e for e in items if e.involved_object.name == cluster
                or (e.involved_object.name or "").startswith(cluster + "-")]
        return sorted(mine, key=event_time)

    def cluster_selector(self, cluster: str) -> str:
        return f"{CLUSTER_LABEL}={cluster}"


def event_time(e: Any) -> str:
    t = e.last_timestamp or e.event_time or e.first_timestamp or e.metadata.creation_timestamp
    return t.strftime("%Y-%m-%dT%H:%M:%SZ") if t is not None else ""


def connect(kubeconfig: str | None, context: str | None, namespace: str | None) -> Target:
    """As kubectl: an explicit --kubeconfig, else $KUBECONFIG / ~/.kube/config, else the
    pod's in-cluster credentials; the namespace from -n, else the context's, else the
    pod's, else `default`."""
    path = kubeconfig or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or None
    if path is None and not os.path.exists(os.path.expanduser(config.KUBE_CONFIG_DEFAULT_LOCATION)) \
            and os.path.exists(IN_CLUSTER_NS):
        config.load_incluster_config()
        with open(IN_CLUSTER_NS) as fh:
            return Target(client.ApiClient(), namespace or fh.read().strip())
    api = config.new_client_from_config(config_file=path, context=context)
    if namespace is None:
        contexts, current = config.list_kube_config_contexts(config_file=path)
        chosen = next((c for c in contexts if c["name"] == context), current) if context else current
        namespace = (chosen or {}).get("context", {}).get("namespace") or "default"
    return Target(api, namespace)


def target_options(command: Command) -> Command:
    """--kubeconfig, --context, --namespace/-n and --json, as kubectl and tidemark name them;
    the command receives `target` (connected lazily) and `as_json`."""

    @click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
    @click.option("--namespace", "-n", default=None, help="Namespace of the AuroraCluster (default: the context's).")
    @click.option("--context", "kube_context", default=None, help="Kubeconfig context (default: the current one).")
    @click.option("--kubeconfig", default=None, type=click.Path(exists=True, dir_okay=False),
                  help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster).")
    @functools.wraps(command)
    def run(kubeconfig: str | None, kube_context: str | None, namespace: str | None, **kwargs: Any) -> Any:
        return command(target=connect(kubeconfig, kube_context, namespace), **kwargs)

    return kube_errors(run)  # type: ignore[return-value]
