"""Fake nodes: the kwok configuration (stages) and the Node objects the rig creates.

kwok only simulates nodes that exist; it does not create them. The rig creates one Node per
(zone, index) with the zone label, kwok's management annotation and a loopback podCIDR, so
kwok hands out pod IPs that local processes can bind (all of 127.0.0.0/8 is local on Linux).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ZONE_LABEL = "topology.kubernetes.io/zone"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_ANNOTATION_VALUE = "fake"
KWOK_SELECTOR = f"{KWOK_ANNOTATION}={KWOK_ANNOTATION_VALUE}"
RIG_NODE_LABEL = "tidemark.dev/rig-node"

# kwok does nothing without Stage configuration. These are kwok's "fast" node/pod stages
# cut down to what the rig needs: nodes become Ready (leases keep them so), pods become
# Running with an IP from their node's podCIDR, deleted pods go away at once.
KWOK_CONFIG = r"""
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      {{ with NodeIP }}
      - address: {{ . | Quote }}
        type: InternalIP
      {{ end }}
      {{ with NodeName }}
      - address: {{ . | Quote }}
        type: Hostname
      {{ end }}
      allocatable:
        cpu: "64"
        memory: 256Gi
        pods: "110"
      capacity:
        cpu: "64"
        memory: 256Gi
        pods: "110"
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version }}
        kubeProxyVersion: {{ printf "kwok-%s" Version }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version }}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-heartbeat-with-lease
spec:
  resourceRef:
    apiGroup: v1
    kind: Node
  selector:
    matchExpressions:
    - key: '.status.phase'
      operator: 'In'
      values: ['Running']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'In'
      values: ['True']
  delay:
    durationMilliseconds: 60000
    jitterDurationMilliseconds: 65000
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ $now | Quote }}
        lastTransitionTime: {{ $now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'DoesNotExist'
    - key: '.status.phase'
      operator: 'In'
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: 'NotIn'
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Initialized
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: Ready
      - lastTransitionTime: {{ $now | Quote }}
        status: "True"
        type: ContainersReady
      containerStatuses:
      {{ range .spec.containers }}
      - image: {{ .image | Quote }}
        name: {{ .name | Quote }}
        ready: true
        restartCount: 0
        state:
          running:
            startedAt: {{ $now | Quote }}
      {{ end }}
      {{ with NodeIPsWith .spec.nodeName }}
      hostIP: {{ index . 0 | Quote }}
      hostIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      {{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}
      podIP: {{ index . 0 | Quote }}
      podIPs:
      {{ range . }}
      - ip: {{ . | Quote }}
      {{ end }}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef:
    apiGroup: v1
    kind: Pod
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: 'Exists'
  next:
    delete: true
"""


@dataclass(frozen=True)
class NodeSpec:
    name: str
    zone: str
    pod_cidr: str


def plan_nodes(zones: list[str], nodes_per_zone: int, octet: int) -> list[NodeSpec]:
    """Node i gets pod CIDR 127.OCTET.(i+1).0/24 (OCTET differs per rig so two rigs on one
    machine do not hand out the same pod IPs)."""
    specs = []
    i = 0
    for zone in zones:
        for j in range(nodes_per_zone):
            i += 1
            specs.append(NodeSpec(f"kwok-{zone}-{j}", zone, f"127.{octet}.{i}.0/24"))
    return specs


def node_manifest(spec: NodeSpec) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": {
                ZONE_LABEL: spec.zone,
                "kubernetes.io/hostname": spec.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                RIG_NODE_LABEL: "true",
            },
            "annotations": {KWOK_ANNOTATION: KWOK_ANNOTATION_VALUE, "node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]},
    }


def node_ready(node: Any) -> bool:
    """True when the Node (client object or dict) has condition Ready=True."""
    status = node.get("status") if isinstance(node, dict) else node.status
    conds = (status.get("conditions") if isinstance(status, dict) else getattr(status, "conditions", None)) or []
    for c in conds:
        ctype = c.get("type") if isinstance(c, dict) else c.type
        cstatus = c.get("status") if isinstance(c, dict) else c.status
        if ctype == "Ready":
            return cstatus == "True"
    return False
