"""Desired Kubernetes objects for an AuroraCluster (pure functions, plain dicts)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import kopf

from .backupspec import BackupSpec, backup_args, backup_env, backup_key_volumes
from .model import (
    NODE_PORT,
    RUN_LOCAL_LABEL,
    SPEC_HASH,
    TEMPLATE_HASH,
    ZONE_LABEL,
    ZONE_POD_LABEL,
    cluster_labels,
    pdb_name,
    selector_labels,
    service_name,
    statefulset_name,
)
from .spec import ClusterSpec


def spec_hash(obj: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _stamp(obj: dict[str, Any], owner: Mapping[str, Any] | None) -> dict[str, Any]:
    """Owned by OWNER (the AuroraCluster: garbage-collected with it) and carrying a hash of
    the desired object so drift in what we manage is detectable."""
    if owner is not None:
        kopf.adopt(obj, owner=owner)  # type: ignore[arg-type]  # a plain body dict
    h = spec_hash({k: v for k, v in obj.items() if k != "status"})
    obj["metadata"].setdefault("annotations", {})[SPEC_HASH] = h
    return obj


def _meta(name: str, namespace: str, cluster: str,
          extra_labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    return {"name": name, "namespace": namespace,
            "labels": {**cluster_labels(cluster), **(extra_labels or {})}}


def headless_service(cluster: str, namespace: str, owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return _stamp({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(service_name(cluster), namespace, cluster),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector_labels(cluster),
            "ports": [{"name": "node", "port": NODE_PORT, "targetPort": NODE_PORT}],
        },
    }, owner)


def statefulset(
    cluster: str,
    namespace: str,
    zone: str,
    spec: ClusterSpec,
    owner: Mapping[str, Any] | None = None,
    node_command: Sequence[str] = ("tidemark",),
    backup: BackupSpec | None = None,
) -> dict[str, Any]:
    """One StatefulSet per zone, pinned there; pod i is `<cluster>-<zone>-i`. With
    spec.backup each node streams to the target (keys from the Secret via secretKeyRef)."""
    name = statefulset_name(cluster, zone)
    sel = {**selector_labels(cluster), ZONE_POD_LABEL: zone}
    pod_labels = {**cluster_labels(cluster), **sel, RUN_LOCAL_LABEL: "true"}
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "ZONE", "value": zone},
        *(backup_env(backup) if backup else []),
    ]
    probe = {"httpGet": {"path": "/readyz", "port": NODE_PORT}, "periodSeconds": 5,
             "failureThreshold": 3}
    key_volumes, key_mounts = backup_key_volumes(backup) if backup else ([], [])
    container: dict[str, Any] = {
        "name": "node",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": [*node_command, "node", "run", "--name", "$(POD_NAME)", "--zone", "$(ZONE)",
                    "--host", "$(POD_IP)", "--port", str(NODE_PORT), "--data", "/data",
                    # Not yet: per-cluster node keys in a Secret (docs/wire.md, "Authentication and roles").
                    "--insecure-no-auth",
                    *(backup_args(backup) if backup else [])],
        "env": env,
        "ports": [{"name": "node", "containerPort": NODE_PORT}],
        "readinessProbe": probe,
        "livenessProbe": {"httpGet": {"path": "/livez", "port": NODE_PORT}, "periodSeconds": 10,
                          "failureThreshold": 6, "initialDelaySeconds": 10},
        "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "tmp", "mountPath": "/tmp"},
                         *key_mounts],
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
    }
    if resources := spec.container_resources():
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "affinity": {
            "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [
                    {"key": ZONE_LABEL, "operator": "In", "values": [zone]}]}]}},
            "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
                "weight": 100,
                "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname",
                                    "labelSelector": {"matchLabels": selector_labels(cluster)}},
            }]},
        },
        # Pod Security "restricted"; a storage node never calls the Kubernetes API.
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "fsGroup": 10001,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "automountServiceAccountToken": False,
        "terminationGracePeriodSeconds": 10,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {}}, *key_volumes],  # the root filesystem is read-only
    }
    sts_spec: dict[str, Any] = {
        "replicas": spec.nodes_per_zone,
        "serviceName": service_name(cluster),
        "podManagementPolicy": "Parallel",
        "selector": {"matchLabels": sel},
        "template": {"metadata": {"labels": pod_labels}, "spec": pod_spec},
    }
    if spec.storage.ephemeral:
        pod_spec["volumes"].append({"name": "data", "emptyDir": {}})
    else:
        pvc_spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": str(spec.storage.size)}}}
        if spec.storage.class_name:
            pvc_spec["storageClassName"] = spec.storage.class_name
        sts_spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"}, "spec": pvc_spec}]
        policy = "Delete" if spec.deletion_policy == "Delete" else "Retain"
        sts_spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": policy,
                                                             "whenScaled": "Retain"}
    meta = _meta(name, namespace, cluster, {ZONE_POD_LABEL: zone})
    meta["annotations"] = {TEMPLATE_HASH: spec_hash(sts_spec["template"])}
    return _stamp({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                   "spec": sts_spec}, owner)


def statefulset_settled(sts: Mapping[str, Any] | None) -> bool:
    """Its pods all run the current template and are ready (no rollout in progress)."""
    if sts is None:
        return False
    spec, st = sts.get("spec") or {}, sts.get("status") or {}
    want = int(spec.get("replicas", 0))
    return (int(st.get("observedGeneration", 0)) >= int(sts["metadata"].get("generation", 0))
            and st.get("currentRevision") == st.get("updateRevision")
            and int(st.get("readyReplicas", 0) or 0) == want
            and int(st.get("updatedReplicas", 0) or 0) == want)


def template_rollout_allowed(zone: str, current: Mapping[str, Mapping[str, Any] | None],
                             all_segments_healthy: bool) -> bool:
    """May zone ZONE's StatefulSet get a new pod template now?

    A template change restarts the zone's pods (StatefulSets roll on their own, ignoring
    PDBs). Rolling all zones at once could restart 3 segments of one PG together (one per
    zone): write quorum lost. So zones roll one at a time: only when every other zone's
    StatefulSet is settled and every PG has all 6 segments complete and current again
    (the previous zone's restarted pods have caught up: no holes, SCL near the best)."""
    if not all_segments_healthy:
        return False
    return all(statefulset_settled(sts) for z, sts in current.items() if z != zone)


def pod_disruption_budget(cluster: str, namespace: str, spec: ClusterSpec,
                          owner: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """At most ONE storage pod of the cluster down by voluntary disruption at a time.

    Every PG has 2 segments in each zone and writes need 4 of 6. Per-zone budgets of
    maxUnavailable 1 would allow 3 evictions at once (one per zone), which can take 3
    segments of one PG: write quorum lost. A cluster-wide budget of 1 keeps every PG at
    >= 5/6 during drains, so one more unplanned failure still leaves a write quorum.
    minAvailable (an integer) avoids the disruption controller's scale lookups across the
    three StatefulSets.
    """
    total = 3 * spec.nodes_per_zone
    return _stamp({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(pdb_name(cluster), namespace, cluster),
        "spec": {"minAvailable": total - 1, "selector": {"matchLabels": selector_labels(cluster)}},
    }, owner)


def desired_objects(cluster: str, namespace: str, zones: Sequence[str], spec: ClusterSpec,
                    owner: Mapping[str, Any] | None = None,
                    node_command: Sequence[str] = ("tidemark",),
                    backup: BackupSpec | None = None) -> list[dict[str, Any]]:
    objs = [headless_service(cluster, namespace, owner)]
    objs += [statefulset(cluster, namespace, z, spec, owner, node_command, backup) for z in zones]
    objs.append(pod_disruption_budget(cluster, namespace, spec, owner))
    return objs
