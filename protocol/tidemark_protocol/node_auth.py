"""Who may call which storage-node route: the roles, their bearer tokens, and the route
table (the one home of this rule; docs/wire.md "Authentication").

A fleet has a secret key (a text of at least 32 characters; `tidemark playground up`
writes DIR/node-auth.key). A role's token is `ROLE.HMAC-SHA256(key, "tidemark-node-role\\0"
ROLE)` in hex, sent as `Authorization: Bearer <token>`. Nodes hold the key and check
tokens; every other process holds only the tokens of the roles it acts in (a playground
process derives them from the key it can read; a pod on Kubernetes is given its role's
token alone, `NodeCredentials.from_tokens`).

- writer: the log stream, recovery (reports, seal, records) and page reads;
- reader: page reads and status (a read replica never writes);
- peer: what nodes ask each other (status, records, pages, snapshots);
- admin: everything, including segment create/drop, peers, hydrate, install and the
  fault-injection routes.

A key file may hold several keys, one per line: the first signs the tokens this process
presents, every one is accepted (rotation: add the new key second everywhere, then first,
then drop the old one).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .errors import UserError

SCHEME = "Bearer"
MIN_KEY_CHARS = 32
MAC_HEX_CHARS = 64  # a token's HMAC-SHA256, in hex


class Role(StrEnum):
    WRITER = "writer"
    READER = "reader"
    PEER = "peer"
    ADMIN = "admin"


W, R, P = Role.WRITER, Role.READER, Role.PEER

# Served to anyone: kubelet probes and the Prometheus scrape carry no credentials.
OPEN_ROUTES = frozenset({("GET", "/livez"), ("GET", "/readyz"), ("GET", "/metrics")})

# (method, route as registered) -> roles allowed besides admin (admin may call every route;
# a route missing here is admin-only, so a new route is closed until it states its roles).
ROUTE_ROLES: dict[tuple[str, str], frozenset[Role]] = {
    ("GET", "/v1/status"): frozenset({W, R, P}),
    ("GET", "/v1/log"): frozenset({W}),
    ("GET", "/v1/segments/{pg}/report"): frozenset({W}),
    ("POST", "/v1/seal"): frozenset({W}),
    ("GET", "/v1/segments/{pg}/records"): frozenset({W, P}),
    ("GET", "/v1/segments/{pg}/pages/{page}"): frozenset({W, R, P}),
    ("GET", "/v1/segments/{pg}/snapshot"): frozenset({P}),
    ("PUT", "/v1/segments/{pg}"): frozenset(),
    ("DELETE", "/v1/segments/{pg}"): frozenset(),
    ("PUT", "/v1/peers"): frozenset(),
    ("POST", "/v1/segments/{pg}/hydrate"): frozenset(),
    ("POST", "/v1/segments/{pg}/install"): frozenset(),
}


class BadKey(UserError, ValueError):
    """A key file that cannot be used (empty, or a key too short to be a secret)."""


class BadToken(UserError, ValueError):
    """A token text that is not `ROLE.<64 hex digits>`."""


def parse_keys(text: str) -> tuple[str, ...]:
    """The keys of a key file: one per non-empty line, the first one current."""
    keys = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not keys:
        raise BadKey("the node key file holds no key")
    short = [i + 1 for i, k in enumerate(keys) if len(k) < MIN_KEY_CHARS]
    if short:
        raise BadKey(f"node key on line(s) {short} is shorter than {MIN_KEY_CHARS} characters")
    return keys


def role_token(key: str, role: Role) -> str:
    mac = hmac.new(key.encode(), b"tidemark-node-role\0" + role.value.encode(), hashlib.sha256)
    return f"{role.value}.{mac.hexdigest()}"


def token_role(token: str) -> Role:
    """The role a token names (BadToken: not a token of this format). Says nothing about
    whether it is valid: only a node holding the key can tell."""
    name, _, mac = token.strip().partition(".")
    try:
        role = Role(name)
    except ValueError:
        raise BadToken(f"not a node token: unknown role {name!r}") from None
    if len(mac) != MAC_HEX_CHARS or any(c not in "0123456789abcdef" for c in mac):
        raise BadToken(f"not a node token: the {role.value} token's MAC is not {MAC_HEX_CHARS} hex digits")
    return role


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"{SCHEME} {token}"}


def allowed_roles(method: str, route: str) -> frozenset[Role] | None:
    """Roles that may call this route; None: open to anyone."""
    if (method, route) in OPEN_ROUTES or (method == "HEAD" and ("GET", route) in OPEN_ROUTES):
        return None
    return ROUTE_ROLES.get((method, route), frozenset()) | {Role.ADMIN}


@dataclass(frozen=True, slots=True)
class Verifier:
    """A node's check of presented tokens against its keys."""

    keys: tuple[str, ...]

    def role_of(self, authorization: str | None) -> Role | None:
        """The role a request's `Authorization` header proves, None if it proves none."""
        if not authorization or not authorization.startswith(SCHEME + " "):
            return None
        token = authorization[len(SCHEME) + 1:].strip()
        name, _, _ = token.partition(".")
        try:
            role = Role(name)
        except ValueError:
            return None
        given = token.encode()
        # Every key is tried (no early exit on the first): timing says nothing about which.
        ok = [hmac.compare_digest(given, role_token(k, role).encode()) for k in self.keys]
        return role if any(ok) else None


@dataclass(frozen=True, slots=True)
class NodeCredentials:
    """The tokens a client process presents, per role it acts in."""

    tokens: dict[Role, str]

    @classmethod
    def from_keys(cls, keys: tuple[str, ...], roles: tuple[Role, ...] = tuple(Role)) -> NodeCredentials:
        return cls({r: role_token(keys[0], r) for r in roles})

    @classmethod
    def from_tokens(cls, tokens: Iterable[str]) -> NodeCredentials:
        """A process that holds tokens only, not the key (e.g. a database instance on
        Kubernetes: its mounted Secret has its role's token)."""
        return cls({token_role(t): t.strip() for t in tokens})

    def headers(self, role: Role) -> dict[str, str]:
        """The header proving `role`; admin's when this process holds no token for it."""
        token = self.tokens.get(role) or self.tokens.get(Role.ADMIN)
        return bearer(token) if token else {}


def headers_for(credentials: NodeCredentials | None, role: Role) -> dict[str, str]:
    """Request headers for a node call in `role` (none without credentials: nodes started
    with `--insecure-no-auth` need none)."""
    return credentials.headers(role) if credentials is not None else {}
