"""Authentication and roles on the storage node's API (issue #14): every route called
without credentials, with a token of another fleet's key, or in a role it does not
allow is refused (401/403) before it touches state; the segment and its SCL are the
same afterwards. The right roles pass, a rotated-in key is accepted, and a node refuses
to start without either a key or an explicit --insecure-no-auth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tidemark_protocol.node_auth import (
    OPEN_ROUTES,
    ROUTE_ROLES,
    NodeCredentials,
    Role,
    allowed_roles,
)

pytestmark = [pytest.mark.process, pytest.mark.security, pytest.mark.timeout(120)]

MEMBERS = ["n1", "n2", "n3", "n4", "n5", "n6"]
FAULT_ROUTES = [("POST", "/v1/debug/segments/{pg}/fake-disk-corruption"),
                ("POST", "/v1/debug/segments/{pg}/fake-page-corruption")]
OTHER_KEY = "another fleet's key, long enough to be one 0123456789"


def path_of(route: str) -> str:
    return route.replace("{pg}", "0").replace("{page}", "0")


async def state_of(c) -> list[dict]:
    """What a refused request must not change: each segment's epochs, SCL and counts."""
    keep = ("pg", "scl", "max_lsn", "records", "vdl_hint", "volume_epoch", "membership_epoch", "floor")
    return [{k: s.get(k) for k in keep} for s in (await c.status())["segments"]]


async def call(url: str, method: str, route: str, headers: dict[str, str]) -> int:
    params = {"lsn": "1", "at": "1", "page": "0", "count": "1", "crc32c": "0"}
    async with aiohttp.ClientSession(headers=headers) as session, session.request(
            method, url + path_of(route), params=params, json={"volume_epoch": 9, "pgs": [0]}) as resp:
        return resp.status


async def test_every_route_refuses_wrong_credentials_and_changes_nothing(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--enable-fault-injection", "--gossip-interval", "5"])
    c = node_client(node)  # admin
    await c.put_segment(0, MEMBERS)
    chain = wire.LogChain(0)
    log = await c.open_log()
    assert (await log.call(wire.frame(1, [(0, 1, [chain.record(1, 0, b"\0\0\0\0a")])], vdl=1)))["results"] \
        == {"0": {"scl": 1}}
    await log.close()
    before = await state_of(c)

    own = NodeCredentials.from_keys(((node.key_file.read_text().strip()),))
    foreign = NodeCredentials.from_keys((OTHER_KEY,))
    routes = [*ROUTE_ROLES, *FAULT_ROUTES, ("GET", "/v1/no-such-route")]
    refused: list[str] = []
    for method, route in routes:
        allowed = allowed_roles(method, route)
        assert allowed is not None and Role.ADMIN in allowed
        cases = [({}, 401), ({"Authorization": "Basic bjE6bjE="}, 401),
                 ({"Authorization": "Bearer admin"}, 401), (foreign.headers(Role.ADMIN), 401)]
        cases += [(own.headers(r), 403) for r in (Role.WRITER, Role.READER, Role.PEER) if r not in allowed]
        for headers, want in cases:
            got = await call(node.url, method, route, headers)
            assert got == want, (method, route, headers, got)
            refused.append(f"{method} {route} {want}")
    assert await state_of(c) == before  # nothing of it touched a segment
    print(f"{len(refused)} refusals over {len(routes)} routes")

    # Open routes stay open (probes, the Prometheus scrape).
    for method, route in OPEN_ROUTES:
        assert await call(node.url, method, route, {}) == 200, route


async def test_each_role_does_its_job_and_nothing_more(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "5"])
    admin = node_client(node)
    await admin.put_segment(0, MEMBERS, layout={"pg_count": 1, "pages_per_pg": 16, "page_size": 256})
    creds = NodeCredentials.from_keys((node.key_file.read_text().strip(),))
    chain = wire.LogChain(0)
    async with aiohttp.ClientSession(headers=creds.headers(Role.WRITER)) as w:
        async with w.ws_connect(node.ws_url, max_msg_size=0) as ws:  # the writer streams the log
            await ws.send_bytes(wire.frame(1, [(0, 1, [chain.record(1, 3, b"\0\0\0\0" + b"z" * 8, full=True)])],
                                           vdl=1))
            ack = json.loads((await ws.receive()).data)
            assert ack["results"]["0"]["scl"] == 1
        async with w.get(f"{node.url}/v1/segments/0/report") as resp:
            assert resp.status == 200
        async with w.put(f"{node.url}/v1/segments/1", json={}) as resp:
            assert resp.status == 403  # a writer never changes a membership
    async with aiohttp.ClientSession(headers=creds.headers(Role.READER)) as r:
        async with r.get(f"{node.url}/v1/segments/0/pages/3", params={"at": "1"}) as resp:
            assert resp.status == 200 and b"z" * 8 in await resp.read()  # a replica reads pages
        for method, route in (("GET", "/v1/log"), ("POST", "/v1/seal"), ("DELETE", "/v1/segments/0"),
                              ("GET", "/v1/segments/0/records")):
            async with r.request(method, node.url + route) as resp:
                assert resp.status == 403, (method, route)
    async with aiohttp.ClientSession(headers=creds.headers(Role.PEER)) as p:
        async with p.get(f"{node.url}/v1/segments/0/records", params={"after": "0"}) as resp:
            assert resp.status == 200  # gossip and hydration pull records
        async with p.post(f"{node.url}/v1/segments/0/hydrate", json={}) as resp:
            assert resp.status == 403
    assert [s["scl"] for s in (await admin.status())["segments"]] == [1]


async def test_a_rotated_in_key_is_accepted_and_peers_gossip_with_their_tokens(
        node_factory, node_client, wire, tmp_path: Path):
    """Two keys in the file: tokens of either are accepted; the node presents the first."""
    old = node_factory("n0", start=False).key_file  # the fixture's fleet key
    new_key = "the new fleet key, rotated in: 0123456789abcdef0123"
    both = tmp_path / "rotating.key"
    both.write_text(old.read_text().strip() + "\n" + new_key + "\n")
    a = node_factory("n1", extra_args=["--gossip-interval", "0.2"])
    b = node_factory("n2", start=False)
    b.key_file = both
    b.start().wait_ready()
    ca, cb = node_client(a), node_client(b)
    peers = {"n1": a.url, "n2": b.url}
    for c in (ca, cb):
        await c.put_segment(0, ["n1", "n2", "n3", "n4", "n5", "n6"], peers=peers)
    chain = wire.LogChain(0)
    log = await ca.open_log()
    await log.call(wire.frame(1, [(0, 1, [chain.record(1, 0, b"\0\0\0\0a"), chain.record(2, 1, b"\0\0\0\0b")])],
                              vdl=2))
    await log.close()
    # n2 pulls the records from n1 by gossip, presenting the peer token of the old key,
    # the first line of its file, which n1 knows.
    await cb.wait_segment(0, lambda s: s["scl"] == 2, what="scl 2 by gossip")
    new = NodeCredentials.from_keys((new_key,))
    async with aiohttp.ClientSession(headers=new.headers(Role.ADMIN)) as s:
        async with s.get(f"{b.url}/v1/status") as resp:
            assert resp.status == 200  # the rotated-in key works on n2 ...
        async with s.get(f"{a.url}/v1/status") as resp:
            assert resp.status == 401  # ... and not on n1, which does not have it yet


@pytest.mark.parametrize("args, message", [
    ([], "needs --auth-key-file"),
    (["--auth-key-file", "{short}"], "shorter than 32 characters"),
    (["--auth-key-file", "{empty}"], "holds no key"),
    (["--auth-key-file", "{short}", "--insecure-no-auth"], "exclude each other"),
])
def test_a_node_without_a_usable_key_refuses_to_start(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "short").write_text("too short\n")
    (tmp_path / "empty").write_text("\n\n")
    args = [a.format(short=tmp_path / "short", empty=tmp_path / "empty") for a in args]
    proc = subprocess.run(
        [sys.executable, "-m", "tidemark_cli.main", "node", "run", "--name", "n1", "--zone", "z1",
         "--port", "1", "--data", str(tmp_path / "data"), *args],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "data").exists()  # nothing was made
