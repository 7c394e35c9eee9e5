"""A fuzzer over the storage node's HTTP API (issue #14): hypothesis draws a route of
the node's table (or none), a method, path parts, query parameters, a body (JSON of any
shape, a valid body with one field changed, raw bytes) and the credentials of any role
or none, against one node holding two segments with records. For every case: never a
500 or a dead process; a refused request (4xx) changes nothing the node reports; what
is accepted may change state (segments made, dropped, sealed), and the next case starts
from what the node then says. Strings never contain ':' or '/', so no drawn URL can
send the node anywhere (the network rule).

10,000 cases per run (FUZZ_CASES), with one persistent HTTP connection."""

from __future__ import annotations

import http.client
import json
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidemark_protocol.node_auth import ROUTE_ROLES, NodeCredentials, Role

pytestmark = [pytest.mark.process, pytest.mark.security, pytest.mark.timeout(600)]

FUZZ_CASES = 10_000
MEMBERS = ["n1", "n2", "n3", "n4", "n5", "n6"]
LAYOUT = {"pg_count": 4, "pages_per_pg": 16, "page_size": 256}
PARAMS = ("after", "upto", "limit", "at", "tail", "epoch", "lsn", "count", "crc32c", "page", "force")
U64 = (1 << 64) - 1

safe_text = st.text(st.characters(blacklist_characters=":/", blacklist_categories=("Cs",)), max_size=12)
numbers = st.one_of(st.sampled_from([0, 1, 2, 3, 7, 16, 255, U64, U64 + 1, -1, 2**31, 10**30]),
                    st.integers(-5, 2000))
scalar = st.one_of(st.none(), st.booleans(), numbers, st.floats(allow_nan=True), safe_text)
json_value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                          st.dictionaries(safe_text, inner, max_size=4)),
                          max_leaves=12)
# mostly the hosted PGs 0 and 1 (and pages of theirs), so requests reach the handlers
path_part = st.one_of(*[st.sampled_from(["0", "1", "3", "17"])] * 6, numbers.map(str), safe_text,
                      st.sampled_from(["00", "+1", " 1", "1e3", "-0"]))


def valid_bodies() -> dict[str, Any]:
    return {
        "segment": {"layout": LAYOUT, "membership": {"epoch": 1, "members": MEMBERS, "next_members": None},
                    "peers": {}, "volume_epoch": 1},
        "seal": {"volume_epoch": 1, "truncations": [], "pgs": [0]},
        "hydrate": {"sources": {"n2": "n2-nowhere"}, "bandwidth_bytes_per_s": 0},
        "peers": {"n2": "n2-nowhere"},
    }


@st.composite
def bodies(draw: st.DrawFn) -> tuple[str, bytes | None]:
    kind = draw(st.sampled_from(["none", "json", "mutated", "bytes"]))
    if kind == "none":
        return kind, None
    if kind == "bytes":
        return kind, draw(st.binary(max_size=64))
    if kind == "json":
        return kind, json.dumps(draw(json_value)).encode()
    body = json.loads(json.dumps(draw(st.sampled_from(list(valid_bodies().values())))))
    target: Any = body
    path = []
    while isinstance(target, dict) and target and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(target)))
        path.append(key)
        if not isinstance(target[key], dict):
            break
        target = target[key]
    if isinstance(target, dict) and target:
        key = draw(st.sampled_from(sorted(target)))
        target[key] = draw(json_value)
    return kind, json.dumps(body).encode()


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, str, dict[str, str], bytes | None, str]:
    if draw(st.integers(0, 9)) < 7:  # mostly a route with its own method: the handlers are what we fuzz
        method, route = draw(st.sampled_from(sorted(ROUTE_ROLES)))
    else:
        method = draw(st.sampled_from(["GET", "PUT", "POST", "DELETE", "PATCH"]))
        route = draw(st.sampled_from([*sorted({r for _, r in ROUTE_ROLES}), "/v1/{pg}", "/v1/segments/{pg}/{pg}/x"]))
    path = route.replace("{pg}", draw(path_part), 1).replace("{pg}", draw(path_part)).replace(
        "{page}", draw(path_part))
    params = draw(st.dictionaries(st.sampled_from(PARAMS), st.one_of(numbers.map(str), safe_text), max_size=4))
    _, body = draw(bodies())
    role = draw(st.sampled_from(["admin"] * 6 + ["writer", "reader", "peer", "none"]))
    return method, path, params, body, role


def node_state(conn: http.client.HTTPConnection, admin: dict[str, str]) -> list[dict]:
    conn.request("GET", "/v1/status", headers=admin)
    resp = conn.getresponse()
    body = resp.read()
    assert resp.status == 200, body
    keep = ("pg", "scl", "max_lsn", "records", "vdl_hint", "volume_epoch", "membership_epoch", "floor",
            "gc_lsn", "log_gc_lsn")
    return [{k: s.get(k) for k in keep} for s in json.loads(body)["segments"]]


async def test_the_node_api_never_fails_and_refusals_change_nothing(node_factory, node_client, wire):
    node = node_factory("n1", extra_args=["--gossip-interval", "60", "--scrub-interval", "0"])
    c = node_client(node)
    for pg in (0, 1):
        await c.put_segment(pg, MEMBERS, layout=LAYOUT)
    log = await c.open_log()
    for pg in (0, 1):
        chain = wire.LogChain(pg)
        recs = [chain.record(pg + 1 + 4 * i, 16 * pg + i % 16, b"\0\0\0\0" + bytes([i]) * 8) for i in range(40)]
        await log.call(wire.frame(1 + pg, [(pg, 1, recs)], vdl=0))
    await log.close()

    creds = NodeCredentials.from_keys((node.key_file.read_text().strip(),))
    headers = {r.value: creds.headers(r) for r in Role} | {"none": {}}
    conn = http.client.HTTPConnection(node.host, node.port, timeout=30)
    seen = {"state": node_state(conn, headers["admin"])}
    recreated = {"n": 0}

    def put_segments(conn: http.client.HTTPConnection) -> None:
        for pg in (0, 1):
            conn.request("PUT", f"/v1/segments/{pg}", body=json.dumps(valid_bodies()["segment"]),
                         headers=headers["admin"])
            conn.getresponse().read()
    outcomes: dict[int, int] = {}

    @settings(max_examples=FUZZ_CASES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(requests())
    def case(req: tuple[str, str, dict[str, str], bytes | None, str]) -> None:
        method, path, params, body, role = req
        query = "&".join(f"{k}={v}" for k, v in params.items())
        target = quote(path) + ("?" + quote(query, safe="=&") if query else "")
        try:
            conn.request(method, target, body=body,
                         headers={**headers[role], "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except (http.client.HTTPException, OSError):
            conn.close()  # the node may close a connection it refused (e.g. a malformed request)
            assert node.proc is not None and node.proc.poll() is None, "the node died"
            return
        outcomes[resp.status] = outcomes.get(resp.status, 0) + 1
        assert resp.status < 500, (method, target, role, body, resp.status)
        after = node_state(conn, headers["admin"])
        if resp.status >= 400:
            assert after == seen["state"], (method, target, role, body, resp.status)
        if {s["pg"] for s in after} != {0, 1}:  # an accepted DELETE: the next cases get segments again
            recreated["n"] += 1
            put_segments(conn)
            after = node_state(conn, headers["admin"])
        seen["state"] = after

    case()
    assert node.proc is not None and node.proc.poll() is None
    assert sum(outcomes.values()) >= FUZZ_CASES * 0.9
    print("status codes:", dict(sorted(outcomes.items())), "segments re-created", recreated["n"], "times")
