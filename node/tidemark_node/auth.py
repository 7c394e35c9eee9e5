"""Authentication and authorization of every node route (the rule is the protocol's:
tidemark_protocol.node_auth). Runs before anything else, so a refused request touches
no state, not even the readiness check."""

from __future__ import annotations

import structlog
from aiohttp import web

from tidemark_protocol.node_auth import SCHEME, allowed_roles

from .state import STATE

log = structlog.get_logger("tidemark.node.auth")


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else request.path


@web.middleware
async def authorize(request: web.Request, handler):
    verifier = request.app[STATE].settings.auth
    if verifier is None:  # `--insecure-no-auth`
        return await handler(request)
    route = _route(request)
    roles = allowed_roles(request.method, route)
    if roles is None:
        return await handler(request)
    role = verifier.role_of(request.headers.get("Authorization"))
    if role is None:
        log.warning("request_unauthenticated", method=request.method, route=route, peer=request.remote)
        return web.json_response(
            {"error": "unauthenticated", "message": f"{request.method} {route} needs a node token"},
            status=401, headers={"WWW-Authenticate": f'{SCHEME} realm="tidemark-node"'})
    if role not in roles:
        log.warning("request_forbidden", method=request.method, route=route, role=role.value,
                    peer=request.remote)
        allowed = ", ".join(sorted(r.value for r in roles))
        return web.json_response(
            {"error": "forbidden", "message": f"role {role.value} may not call {request.method} {route} "
                                              f"(allowed: {allowed})"}, status=403)
    return await handler(request)
