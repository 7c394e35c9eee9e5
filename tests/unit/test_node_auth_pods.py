"""Kubernetes pods and the storage nodes' key (#14): who mounts what of the cluster's
node-auth Secret, how its entries are made and read, and the operator's create-once."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml

from tidemark_cli.chaos_job import WorkloadJob
from tidemark_compute.topology import load_token_credentials
from tidemark_operator import node_access, nodekeys
from tidemark_operator.instance_resources import instance_deployment
from tidemark_operator.nodeclient import NodeClient, NodeError
from tidemark_operator.placement import Conflict
from tidemark_operator.resources import node_auth_secret, statefulset
from tidemark_operator.spec import parse_spec
from tidemark_operator.state import ClusterState
from tidemark_protocol.node_auth import (
    BadToken,
    NodeCredentials,
    Role,
    Verifier,
    role_token,
    token_role,
)

pytestmark = pytest.mark.unit

KEY = "k" * 64
OWNER = {"apiVersion": "tidemark.dev/v1alpha1", "kind": "AuroraCluster", "metadata": {"name": "demo", "uid": "u-1"}}


def _secret_items(pod: dict[str, Any]) -> dict[str, list[str]]:
    """volume name -> the entries of the node-auth Secret it projects."""
    return {v["name"]: [i["key"] for i in v["secret"]["items"]] for v in pod["volumes"]
            if (v.get("secret") or {}).get("secretName") == "demo-node-auth"}


def _mounts(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}


def test_storage_pods_run_with_the_key_file_and_mount_only_the_key() -> None:
    pod = statefulset("demo", "ns", "zone-a", parse_spec({}), OWNER)["spec"]["template"]["spec"]
    cmd = pod["containers"][0]["command"]
    assert "--insecure-no-auth" not in cmd
    assert cmd[cmd.index("--auth-key-file") + 1] == "/etc/tidemark/node-auth/node-auth.key"
    assert _secret_items(pod) == {"node-auth": ["node-auth.key"]}
    volume = next(v for v in pod["volumes"] if v["name"] == "node-auth")
    assert volume["secret"]["defaultMode"] == 0o400
    assert _mounts(pod)["node-auth"] == {"name": "node-auth", "mountPath": "/etc/tidemark/node-auth",
                                         "readOnly": True}
    # readable by the non-root user through the fsGroup the kubelet gives the files
    assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == 10001
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"


@pytest.mark.parametrize(("role", "token"), [("writer", "writer.token"), ("replica", "reader.token")])
def test_instance_pods_mount_their_roles_token_never_the_key(role: str, token: str) -> None:
    d = instance_deployment("demo", "ns", role, 1, parse_spec({"instances": 2}), OWNER)
    pod = d["spec"]["template"]["spec"]
    assert _secret_items(pod) == {"node-tokens": [token]}
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--node-tokens-dir") + 1] == _mounts(pod)["node-tokens"]["mountPath"]
    assert _mounts(pod)["node-tokens"]["readOnly"] is True
    assert "node-auth.key" not in str(pod)


def test_the_workload_job_mounts_only_the_writer_token() -> None:
    pod = WorkloadJob("demo", "default", "tidemark:0.1.0", 90).manifest()["spec"]["template"]["spec"]
    assert _secret_items(pod) == {"node-tokens": ["writer.token"]}
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--node-tokens-dir") + 1] == _mounts(pod)["node-tokens"]["mountPath"]
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsUser"] == 10001


def test_the_secret_holds_the_key_and_the_tokens_it_signs(tmp_path: Path) -> None:
    s = node_auth_secret("demo", "ns", KEY, OWNER)
    assert s["metadata"]["name"] == "demo-node-auth" and s["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    text = {k: base64.b64decode(v).decode() for k, v in s["data"].items()}
    assert sorted(text) == ["node-auth.key", "reader.token", "writer.token"]
    assert text["node-auth.key"].strip() == KEY
    verifier = Verifier((KEY,))
    assert verifier.role_of(f"Bearer {text['writer.token'].strip()}") == Role.WRITER
    assert verifier.role_of(f"Bearer {text['reader.token'].strip()}") == Role.READER
    assert nodekeys.credentials_from_data(s["data"]) == NodeCredentials.from_keys((KEY,))
    # an instance pod's mounted files: its token alone is enough to present it
    (tmp_path / "writer.token").write_text(text["writer.token"])
    creds = load_token_credentials(tmp_path)
    assert creds.tokens == {Role.WRITER: role_token(KEY, Role.WRITER)}
    assert creds.headers(Role.WRITER) == {"Authorization": f"Bearer {role_token(KEY, Role.WRITER)}"}
    with pytest.raises(FileNotFoundError):
        load_token_credentials(tmp_path / "nothing")


def test_token_format_is_checked_where_it_is_defined() -> None:
    assert token_role(role_token(KEY, Role.READER)) == Role.READER
    for bad in ("", "root.abc", "writer." + "0" * 63, "writer." + "g" * 64, KEY):
        with pytest.raises(BadToken):
            token_role(bad)


class FakeKube:
    def __init__(self, existing: dict[str, Any] | None = None, race: bool = False) -> None:
        self.secret, self.race, self.created = existing, race, 0

    def read(self, kind: str, name: str, ns: str) -> dict[str, Any] | None:
        assert (kind, name) == ("Secret", "demo-node-auth")
        return self.secret

    def create(self, obj: dict[str, Any]) -> None:
        self.created += 1
        if self.race:  # another pass made it first: ours is refused, theirs is read
            self.secret = node_auth_secret("demo", "ns", "r" * 64)
            raise Conflict("exists")
        self.secret = obj


def test_operator_creates_the_secret_once_and_keeps_an_existing_key() -> None:
    events: list[tuple[str, str, str]] = []
    kube, state = FakeKube(), ClusterState()
    first = node_access.cluster_credentials(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e))  # type: ignore[arg-type]
    assert kube.created == 1 and [e[1] for e in events] == ["Created"]
    key = base64.b64decode(kube.secret["data"]["node-auth.key"]).decode().strip()  # type: ignore[index]
    assert len(key) >= 32 and key not in str(events)
    assert first == NodeCredentials.from_keys((key,))
    state.node_credentials = None  # e.g. an operator restart
    again = node_access.cluster_credentials(kube, state, "demo", "ns", OWNER, lambda *e: events.append(e))  # type: ignore[arg-type]
    assert again == first and kube.created == 1
    raced = FakeKube(race=True)
    got = node_access.cluster_credentials(raced, ClusterState(), "demo", "ns", OWNER, lambda *e: None)  # type: ignore[arg-type]
    assert got == NodeCredentials.from_keys(("r" * 64,))
    with pytest.raises(ValueError, match="demo-node-auth"):
        node_access.cluster_credentials(FakeKube({"data": {"node-auth.key": base64.b64encode(b"short").decode()}}),  # type: ignore[arg-type]
                                        ClusterState(), "demo", "ns", OWNER, lambda *e: None)


async def test_node_client_presents_the_clusters_admin_token_and_notes_refusals() -> None:
    from aiohttp import web

    seen: list[str | None] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"ok": True}, status=200 if seen[-1] else 401)

    app = web.Application()
    app.router.add_get("/v1/status", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1/status"  # type: ignore[union-attr]
    client = NodeClient()
    try:
        scoped = client.for_cluster(NodeCredentials.from_keys((KEY,)))
        assert await scoped.call("GET", url) == {"ok": True} and not scoped.refused
        with pytest.raises(NodeError, match="401"):
            await client.call("GET", url)  # the unscoped client (instances' admin endpoints): no token
        assert client.refused and not scoped.refused
        assert seen == [f"Bearer {role_token(KEY, Role.ADMIN)}", None]
    finally:
        await client.close()
        await runner.cleanup()


def test_the_example_workload_job_mounts_only_the_writer_token() -> None:
    docs = list(yaml.safe_load_all((Path(__file__).resolve().parents[2] / "examples" / "workload-job.yaml").read_text()))
    pod = next(d for d in docs if d["kind"] == "Job")["spec"]["template"]["spec"]
    assert _secret_items(pod) == {"node-tokens": ["writer.token"]}
    assert pod["volumes"][1]["secret"]["defaultMode"] == 0o400 and pod["securityContext"]["fsGroup"] == 10001
    cmd = pod["containers"][0]["command"]
    assert cmd[cmd.index("--node-tokens-dir") + 1] == _mounts(pod)["node-tokens"]["mountPath"]
