"""The NetworkPolicies an AuroraCluster gets (#14): ingress to the storage port only from
the cluster's own pods, node clients, the operator's pods (in its own namespace when it
knows it) and `allowFrom`; the instances' PostgreSQL port from `sqlFrom` (default
anywhere), their admin port as the storage port; none with `policies: false`. The
apiserver's own validation of these objects, and their enforcement, are tested on the
rig and on kind."""

from __future__ import annotations

from typing import Any

from tidemark_operator import netpolicy
from tidemark_operator.model import NODE_PORT, SQL_ADMIN_PORT, SQL_PORT
from tidemark_operator.spec import parse_spec

OWNER = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster",
         "metadata": {"name": "demo", "namespace": "ns", "uid": "u-1"}}


def rules(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]] | None]:
    """port -> its `from` (None: anywhere)."""
    return {r["ports"][0]["port"]: r.get("from") for r in policy["spec"]["ingress"]}


def test_storage_port_only_from_the_cluster_node_clients_and_the_operator() -> None:
    (nodes, inst), unwanted = netpolicy.wanted("demo", "ns", parse_spec({}), "tidemark-system", OWNER)
    assert unwanted == []
    assert nodes["kind"] == "NetworkPolicy" and nodes["metadata"]["name"] == "demo-nodes"
    assert nodes["spec"]["podSelector"]["matchLabels"] == {"tidemark.dev/cluster": "demo",
                                                           "app.kubernetes.io/component": "storage"}
    assert nodes["spec"]["policyTypes"] == ["Ingress"]  # egress (S3, DNS, apiserver) untouched
    assert nodes["metadata"]["ownerReferences"][0]["uid"] == "u-1"  # collected with the cluster
    peers = rules(nodes)[NODE_PORT]
    assert peers == [
        {"podSelector": {"matchLabels": {"tidemark.dev/cluster": "demo"}}},
        {"podSelector": {"matchLabels": {"tidemark.dev/node-client": "demo"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "tidemark-system"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "tidemark",
                                         "app.kubernetes.io/component": "operator"}}},
    ]
    assert list(rules(nodes)) == [NODE_PORT]
    # the instances: SQL from anywhere by default, admin as the storage port
    assert inst["spec"]["podSelector"]["matchLabels"] == {"tidemark.dev/cluster": "demo",
                                                          "app.kubernetes.io/component": "instance"}
    assert rules(inst) == {SQL_PORT: None, SQL_ADMIN_PORT: peers}


def test_sql_from_allow_from_and_an_operator_outside_any_pod() -> None:
    monitoring = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
    apps = {"podSelector": {"matchLabels": {"app": "shop"}}}
    spec = parse_spec({"network": {"sqlFrom": [apps], "allowFrom": [monitoring]}})
    (nodes, inst), _ = netpolicy.wanted("demo", "ns", spec, None)
    assert rules(inst)[SQL_PORT] == [apps]
    assert rules(nodes)[NODE_PORT][-1] == monitoring and rules(inst)[SQL_ADMIN_PORT][-1] == monitoring
    operator = rules(nodes)[NODE_PORT][2]
    assert operator["namespaceSelector"] == {}  # any namespace's operator pods


def test_none_when_switched_off_and_the_instances_one_only_with_instances() -> None:
    want, unwanted = netpolicy.wanted("demo", "ns", parse_spec({"network": {"policies": False}}), "op")
    assert want == [] and unwanted == ["demo-nodes", "demo-instances"]
    want, unwanted = netpolicy.wanted("demo", "ns", parse_spec({"instances": 0}), "op")
    assert [p["metadata"]["name"] for p in want] == ["demo-nodes"] and unwanted == ["demo-instances"]
