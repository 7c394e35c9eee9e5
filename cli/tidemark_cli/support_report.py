"""`kubectl tidemark report NAME`: a support bundle (a .tar.gz) of one AuroraCluster.

What goes in: the AuroraCluster (spec and status), its objects (StatefulSets, Deployments,
Services, PVCs, ConfigMaps, PDBs, pods, Leases, AuroraSnapshots), the Events of the
cluster and of what is named after it, the tail of the operator's and of every storage and
instance pod's log, and every storage node's `/v1/status` that answers within the
timeout (direct where pod IPs route, else through a port-forward; https verified against
the cluster's own CA, verify-ca as every node hop on Kubernetes).
Secrets: names only, listed as metadata (the API server never sends us their
data); the exceptions are the cluster's node-auth Secret, read (when we may) to derive
the reader token /v1/status wants, and its node-tls Secret, whose CA certificate the nodes
are verified against; neither is written to the bundle. `manifest.json`
lists every file and what could not be collected (and why)."""

from __future__ import annotations

import http.client
import io
import ipaddress
import json
import os
import ssl
import tarfile
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from kubernetes.client import ApiClient, CoreV1Api
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward

from tidemark_operator import nodetls
from tidemark_operator.model import NODE_PORT, instance_selector, selector_labels
from tidemark_operator.topology import cluster_credentials, cluster_trust, pod_serves_tls
from tidemark_protocol.errors import UserError
from tidemark_protocol.node_auth import Role, headers_for

from .kube_target import TIMEOUT, Target

OPERATOR_SELECTOR = "app.kubernetes.io/component=operator"
PARTIAL_METADATA = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
Progress = Callable[[str], None]


@dataclass
class Bundle:
    """The files of the report, in memory until written (small: logs are tails)."""

    root: str
    files: dict[str, bytes] = field(default_factory=dict)
    missing: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str, data: str | bytes) -> None:
        self.files[path] = data.encode() if isinstance(data, str) else data

    def add_yaml(self, path: str, obj: Any) -> None:
        self.add(path, yaml.safe_dump(obj, sort_keys=False))

    def miss(self, what: str, why: str) -> None:
        self.missing.append({"what": what, "why": " ".join(why.split())[:500]})

    def tarball(self, manifest: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w:gz") as tar:
            items = {**self.files, "manifest.json": json.dumps(manifest, indent=1).encode()}
            for path, data in sorted(items.items()):
                info = tarfile.TarInfo(f"{self.root}/{path}")
                info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    """Without managedFields (long, and no help to a reader)."""
    obj.get("metadata", {}).pop("managedFields", None)
    return obj


def _why(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"{exc.status} {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def secret_names(target: Target, query: tuple[str, str]) -> list[str]:
    """Names of the namespace's Secrets matching QUERY (labelSelector or fieldSelector,
    value), as PartialObjectMetadata: the Secrets' data never leaves the API server.

    The generated list call with the metadata-only Accept header, on an ApiClient of
    its own (the target's configuration): a client's default headers win over the ones
    the generated method sets, in kubernetes 36 (which overwrites a per-call `_headers`
    Accept with application/json) as in 37. The answer is parsed here, not into
    V1SecretList, and refused unless it is the metadata list we asked for."""
    selector = {"labelSelector": "label_selector", "fieldSelector": "field_selector"}[query[0]]
    with ApiClient(target.api.configuration) as api:
        api.set_default_header("Accept", PARTIAL_METADATA)
        resp = CoreV1Api(api).list_namespaced_secret(
            target.namespace, **{selector: query[1]}, _preload_content=False, _request_timeout=TIMEOUT)
        answer = json.loads(resp.data)
    if answer.get("kind") != "PartialObjectMetadataList":
        raise ValueError(f"the API server answered {answer.get('kind')!r}, not PartialObjectMetadataList")
    return sorted(i["metadata"]["name"] for i in answer.get("items") or [])


def referenced_secrets(ac: dict[str, Any]) -> set[str]:
    """Secrets the spec names (backup, restore source, instance credentials)."""
    spec = ac.get("spec") or {}
    refs = [(spec.get("backup") or {}).get("credentialsSecret"),
            (spec.get("instance") or {}).get("credentialsSecret"),
            ((spec.get("restore") or {}).get("source") or {}).get("credentialsSecret")]
    return {r for r in refs if r}


def collect_secret_names(b: Bundle, target: Target, ac: dict[str, Any]) -> None:
    """objects/secrets.txt: the cluster's Secrets and the ones its spec names, if they exist."""
    try:
        names = set(secret_names(target, ("labelSelector", target.cluster_selector(ac["metadata"]["name"]))))
        for ref in sorted(referenced_secrets(ac)):
            names.update(secret_names(target, ("fieldSelector", f"metadata.name={ref}")))
    except (ApiException, ValueError) as exc:
        b.miss("objects/secrets.txt", _why(exc))
        return
    b.add("objects/secrets.txt", "".join(f"{s}\n" for s in sorted(names)))


def collect_objects(b: Bundle, target: Target, name: str) -> list[Any]:
    """Every object of the cluster (label tidemark.dev/cluster=NAME); returns its pods."""
    sel, ns, core, apps = target.cluster_selector(name), target.namespace, target.core, target.apps
    lists: dict[str, Callable[[], Any]] = {
        "statefulsets": lambda: apps.list_namespaced_stateful_set(ns, label_selector=sel, _request_timeout=TIMEOUT),
        "deployments": lambda: apps.list_namespaced_deployment(ns, label_selector=sel, _request_timeout=TIMEOUT),
        "services": lambda: core.list_namespaced_service(ns, label_selector=sel, _request_timeout=TIMEOUT),
        "pvcs": lambda: core.list_namespaced_persistent_volume_claim(ns, label_selector=sel,
                                                                     _request_timeout=TIMEOUT),
        "configmaps": lambda: core.list_namespaced_config_map(ns, label_selector=sel, _request_timeout=TIMEOUT),
        "pods": lambda: core.list_namespaced_pod(ns, label_selector=sel, _request_timeout=TIMEOUT),
        "pdbs": lambda: target.policy.list_namespaced_pod_disruption_budget(ns, label_selector=sel,
                                                                             _request_timeout=TIMEOUT),
        "leases": lambda: target.coordination.list_namespaced_lease(ns, _request_timeout=TIMEOUT),
    }
    pods: list[Any] = []
    for kind, call in lists.items():
        try:
            items = call().items
        except ApiException as exc:
            b.miss(f"objects/{kind}.yaml", _why(exc))
            continue
        if kind == "leases":  # the writer Lease carries no cluster label: by name
            items = [i for i in items if (i.metadata.name or "").startswith(name + "-")]
        if kind == "pods":
            pods = items
        b.add_yaml(f"objects/{kind}.yaml", [strip(target.plain(i)) for i in items])
    try:
        b.add_yaml("objects/aurorasnapshots.yaml", target.snapshots(name))
    except ApiException as exc:
        b.miss("objects/aurorasnapshots.yaml", _why(exc))
    return pods


def collect_log(b: Bundle, target: Target, path: str, pod: str, ns: str, tail: int) -> None:
    try:
        text = target.core.read_namespaced_pod_log(pod, ns, tail_lines=tail, limit_bytes=tail * 400,
                                                   timestamps=True, _request_timeout=TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a log that cannot be read is noted, not fatal
        b.miss(path, _why(exc))
        return
    b.add(path, text or "")


def operator_pods(target: Target, namespace: str | None) -> list[Any]:
    """The operator's pods: in NAMESPACE, else anywhere we may list (the chart's release
    namespace is not known), else the cluster's namespace."""
    if namespace:
        return list(target.core.list_namespaced_pod(namespace, label_selector=OPERATOR_SELECTOR,
                                                    _request_timeout=TIMEOUT).items)
    try:
        return list(target.core.list_pod_for_all_namespaces(label_selector=OPERATOR_SELECTOR,
                                                            _request_timeout=TIMEOUT).items)
    except ApiException as exc:
        if exc.status != 403:
            raise
        return operator_pods(target, target.namespace)


def routable_here(ip: str) -> bool:
    """Whether a pod IP can be dialled from this process: inside the cluster, or a
    loopback pod address (the rig). From a laptop a kind pod IP is not routed: a packet
    to it would follow the default route off the machine."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) or ipaddress.ip_address(ip).is_loopback


def _trust(tls: ssl.SSLContext | None) -> ssl.SSLContext:
    if tls is None:  # never fall back to plain http nor to unverified TLS
        raise OSError("no CA to verify the node against (the node-tls Secret is missing or may not be read)")
    return tls


def _status_direct(ip: str, timeout: float, headers: dict[str, str], tls: ssl.SSLContext | None,
                   serves_tls: bool) -> str:
    request = urllib.request.Request(f"{nodetls.node_url(ip, serves_tls)}/v1/status", headers=headers)
    context = _trust(tls) if serves_tls else None
    with urllib.request.urlopen(request, timeout=timeout, context=context) as r:
        return str(r.read().decode())


def _status_forwarded(target: Target, pod: str, timeout: float, headers: dict[str, str],
                      tls: ssl.SSLContext | None, serves_tls: bool) -> str:
    """GET /v1/status through the API server's port-forward (kubectl port-forward's
    tunnel: our own HTTP, over our own TLS to the node, so the Authorization header
    reaches the node, unlike the pod proxy, which keeps it for itself)."""
    context = _trust(tls) if serves_tls else None
    # an ApiClient of its own: `portforward` swaps the client's request method while it
    # opens the tunnel, and collect_nodes opens several at once
    api = ApiClient(target.api.configuration)
    forward = portforward(CoreV1Api(api).connect_get_namespaced_pod_portforward, pod, target.namespace,
                          ports=str(NODE_PORT), _request_timeout=timeout)
    try:
        conn = http.client.HTTPConnection("localhost", NODE_PORT, timeout=timeout)
        sock = forward.socket(NODE_PORT)
        sock.settimeout(timeout)
        # verify-ca: the chain must lead to the cluster's CA (no host name to check)
        conn.sock = context.wrap_socket(sock, server_hostname=None) if context is not None else sock
        conn.request("GET", "/v1/status", headers=headers)
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        if resp.status != 200:
            raise OSError(f"HTTP {resp.status} {resp.reason}: {body[:200]}")
        return body
    finally:
        forward.close()
        api.close()


def node_status(target: Target, pod: Any, timeout: float, headers: dict[str, str] | None = None,
                tls: ssl.SSLContext | None = None) -> str:
    """A storage node's /v1/status with HEADERS (the reader token), verified against TLS
    (the cluster's CA): straight to the pod IP where it routes, else through a
    port-forward."""
    ip = pod.status.pod_ip
    direct = False
    https = pod_serves_tls(pod)
    try:
        direct = bool(ip) and routable_here(ip)
        if direct:
            return _status_direct(ip, timeout, headers or {}, tls, https)
        return _status_forwarded(target, pod.metadata.name, timeout, headers or {}, tls, https)
    except (OSError, ApiException, ValueError) as exc:
        raise OSError(f"{'direct' if direct else 'port-forward'}: {_why(exc)}") from exc


def reader_headers(b: Bundle, target: Target, name: str) -> dict[str, str]:
    """The reader token's header from the cluster's node-auth Secret ({} when we may not read it)."""
    try:
        creds = cluster_credentials(target.core, target.namespace, name)
    except (ApiException, ValueError) as exc:
        b.miss("nodes", f"no node token (the node-auth Secret: {_why(exc)})")
        return {}
    if creds is None:
        b.miss("nodes", "no node token: the node-auth Secret is missing or may not be read (nodes answer 401)")
    return headers_for(creds, Role.READER)


def node_trust(b: Bundle, target: Target, name: str) -> ssl.SSLContext | None:
    """Trust for the nodes from the cluster's node-tls Secret (None when we may not read it)."""
    try:
        tls = cluster_trust(target.core, target.namespace, name)
    except (ApiException, ValueError, ssl.SSLError) as exc:
        b.miss("nodes", f"no node CA (the node-tls Secret: {_why(exc)})")
        return None
    if tls is None:
        b.miss("nodes", "no node CA: the node-tls Secret is missing or may not be read (https nodes unverifiable)")
    return tls


def collect_nodes(b: Bundle, target: Target, storage: list[Any], timeout: float,
                  headers: dict[str, str] | None = None, tls: ssl.SSLContext | None = None) -> list[str]:
    """Each storage pod's /v1/status, in parallel (a dead node costs TIMEOUT once)."""

    def one(p: Any) -> tuple[str, str | None, str]:
        try:
            return p.metadata.name, node_status(target, p, timeout, headers, tls), ""
        except OSError as exc:
            return p.metadata.name, None, str(exc)

    unreachable = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for name, text, why in pool.map(one, storage):
            if text is None:
                unreachable.append(name)
                b.miss(f"nodes/{name}.json", f"unreachable: {why}")
            else:
                b.add(f"nodes/{name}.json", text)
    return unreachable


def build_report(target: Target, name: str, tail: int = 2000, node_timeout: float = 3.0,
                 operator_namespace: str | None = None, progress: Progress = lambda _s: None,
                 now: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """(the tarball's bytes, its manifest)."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
    b = Bundle(f"tidemark-report-{name}-{stamp}")
    progress(f"AuroraCluster {target.namespace}/{name}")
    ac = strip(target.cluster(name))
    b.add_yaml("cluster.yaml", ac)
    progress("owned objects")
    pods = collect_objects(b, target, name)
    collect_secret_names(b, target, ac)
    progress("events")
    b.add_yaml("events.yaml", [strip(target.plain(e)) for e in target.events_of(name)])
    progress("operator logs")
    try:
        ops = operator_pods(target, operator_namespace)
    except ApiException as exc:
        ops = []
        b.miss("logs/operator", _why(exc))
    if not ops:
        b.miss("logs/operator", f"no pod with {OPERATOR_SELECTOR} found (an operator run outside the cluster)")
    for p in ops:
        collect_log(b, target, f"logs/operator/{p.metadata.name}.log", p.metadata.name, p.metadata.namespace, tail)
    progress(f"pod logs ({len(pods)} pods, last {tail} lines each)")
    storage = target.pods(selector_labels(name))
    for kind, group in (("storage", storage), ("instances", target.pods(instance_selector(name)))):
        for p in group:
            collect_log(b, target, f"logs/{kind}/{p.metadata.name}.log", p.metadata.name, target.namespace, tail)
    progress(f"storage nodes' /v1/status ({len(storage)} nodes, {node_timeout:g} s timeout)")
    headers = reader_headers(b, target, name) if storage else {}
    unreachable = collect_nodes(b, target, storage, node_timeout, headers,
                                node_trust(b, target, name) if storage else None)
    manifest = {"cluster": name, "namespace": target.namespace,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
                "files": sorted(b.files), "unreachable_nodes": unreachable, "missing": b.missing,
                "log_tail_lines": tail}
    return b.tarball(manifest), manifest


def default_output(name: str, now: float) -> Path:
    return Path(f"tidemark-report-{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now))}.tar.gz")


def write_report(data: bytes, out: Path) -> None:
    if out.exists() and out.is_dir():
        raise UserError(f"{out} is a directory: give -o a file name")
    out.write_bytes(data)
