"""The node API's roles and tokens (tidemark_protocol.node_auth): tokens prove one role
of one key, nothing else; every route the node registers states its roles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tidemark_protocol.node_auth import (
    OPEN_ROUTES,
    ROUTE_ROLES,
    BadKey,
    NodeCredentials,
    Role,
    Verifier,
    allowed_roles,
    bearer,
    parse_keys,
    role_token,
)

pytestmark = [pytest.mark.unit, pytest.mark.security]

KEY = "k" * 40
OLD = "o" * 40
NODE = Path(__file__).resolve().parents[2] / "node" / "tidemark_node"


def test_a_token_proves_its_role_of_its_key_only() -> None:
    v = Verifier((KEY,))
    for role in Role:
        assert v.role_of(bearer(role_token(KEY, role))["Authorization"]) is role
    admin = role_token(KEY, Role.ADMIN)
    writer = role_token(KEY, Role.WRITER)
    forged = [None, "", admin, f"Basic {admin}", "Bearer", "Bearer admin", "Bearer admin.",
              "Bearer " + "admin." + writer.split(".")[1],  # another role's MAC under admin's name
              "Bearer " + role_token(OLD, Role.ADMIN), "Bearer " + admin[:-1] + "0",
              "Bearer root." + admin.split(".")[1]]
    for header in forged:
        assert v.role_of(header) is None, header


def test_every_key_of_the_ring_is_accepted_and_the_first_signs() -> None:
    keys = parse_keys(f"\n{KEY}\n  {OLD}  \n")
    assert keys == (KEY, OLD)
    v = Verifier(keys)
    assert v.role_of("Bearer " + role_token(OLD, Role.PEER)) is Role.PEER
    creds = NodeCredentials.from_keys(keys, (Role.PEER,))
    assert creds.headers(Role.PEER) == bearer(role_token(KEY, Role.PEER))
    assert creds.headers(Role.ADMIN) == {}  # a node holds no admin token


@pytest.mark.parametrize("text", ["", "\n \n", "short\n", f"{KEY}\nshort\n"])
def test_unusable_key_files_are_refused(text: str) -> None:
    with pytest.raises(BadKey):
        parse_keys(text)


def test_admin_may_call_everything_and_unlisted_routes_are_admin_only() -> None:
    for (method, route), roles in ROUTE_ROLES.items():
        assert allowed_roles(method, route) == roles | {Role.ADMIN}
    assert allowed_roles("POST", "/v1/debug/segments/{pg}/fake-disk-corruption") == {Role.ADMIN}
    assert allowed_roles("GET", "/livez") is None and allowed_roles("HEAD", "/readyz") is None
    assert allowed_roles("DELETE", "/livez") == {Role.ADMIN}
    assert Role.READER not in allowed_roles("GET", "/v1/log")
    assert allowed_roles("PUT", "/v1/segments/{pg}") == {Role.ADMIN}


def test_every_route_the_node_registers_states_its_roles() -> None:
    """A new route must be added to ROUTE_ROLES (or be a fault-injection route, which is
    admin-only by being absent)."""
    registered = set()
    for path in NODE.rglob("*.py"):
        for method, route in re.findall(r'add_(get|put|post|delete)\("([^"]+)"', path.read_text()):
            registered.add((method.upper(), route))
    assert len(registered) >= 15
    unstated = {r for r in registered - set(ROUTE_ROLES) - OPEN_ROUTES if not r[1].startswith("/v1/debug/")}
    assert not unstated, unstated
    assert set(ROUTE_ROLES) <= registered  # nothing stale in the table
