"""Fleet status: which nodes answer, how healthy each PG's segments are, and the
database instances (their `dsn`, whether they answer, a replica's lag)."""

from __future__ import annotations

import asyncio

import aiohttp

from tidemark_compute.topology import Topology
from tidemark_protocol.node_auth import Role
from tidemark_protocol.quorum import SEGMENTS_PER_PG

from .fleet import Fleet
from .instances import probe


async def _node_status(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict | None:
    try:
        async with session.get(f"{url}/v1/status", headers=headers) as resp:
            return await resp.json() if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError, OSError):
        return None


async def _admin_status(session: aiohttp.ClientSession, url: str | None) -> dict | None:
    """An instance's admin /v1/status (lag_ms, read point), None if it does not answer."""
    return None if url is None else await _node_status(session, url, {})


async def fleet_status(fleet: Fleet, topology: Topology, timeout: float = 1.0) -> dict:
    async with topology.session(None, timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        names = list(fleet.nodes)
        admin = topology.headers(Role.ADMIN)
        answers = await asyncio.gather(*(_node_status(session, fleet.nodes[n].url, admin) for n in names))
        endpoints = await asyncio.gather(*(asyncio.to_thread(probe, i.host, i.port, i.user, timeout)
                                           for i in fleet.instances.values()))
        admins = await asyncio.gather(*(_admin_status(session, i.admin_url) for i in fleet.instances.values()))
    by_node = dict(zip(names, answers, strict=True))
    nodes = []
    for name in names:
        node = fleet.nodes[name]
        status = by_node[name]
        segments = status.get("segments", []) if status else []
        nodes.append(
            {
                "name": name,
                "zone": node.zone,
                "address": node.url,
                "process": fleet.state(name),
                "alive": status is not None,
                # False: its S3 server lacks conditional writes, backup puts may overwrite objects
                "backup_conditional_puts": ((status or {}).get("backup") or {}).get("conditionalPuts"),
                "segments": [
                    {"pg": s["pg"], "scl": s["scl"], "holes": s.get("holes", 0)} for s in segments
                ],
            }
        )
    pgs = []
    for pg, membership in sorted(topology.memberships.items()):
        scls = {}
        for member in membership.all_members:
            status = by_node.get(member)
            seg = next((s for s in (status or {}).get("segments", []) if s["pg"] == pg), None)
            if seg is not None:
                scls[member] = seg["scl"]
        top = max(scls.values(), default=0)
        pgs.append(
            {
                "id": pg,
                "members": list(membership.members),
                "next_members": list(membership.next_members or []),
                "epoch": membership.epoch,
                "healthy_segments": len(scls),
                "complete_segments": sum(1 for v in scls.values() if v == top),
                "scl": scls,
            }
        )
    instances = [
        {
            "name": inst.name,
            "role": inst.role,
            "dsn": inst.dsn,  # no password: it is in password_file (user:password)
            "password_file": inst.password_file,
            "address": f"{inst.host}:{inst.port}",
            "process": fleet.state(inst.name),
            "alive": endpoint in ("serving", "full"),
            "endpoint": endpoint,  # serving | fenced | full | error | unreachable
            # the writer: 0; a replica: how stale its newest VDL is (None: it does not answer)
            "lag_ms": 0 if inst.role == "writer" else (admin or {}).get("lag_ms"),
            "read_point": (admin or {}).get("read_point", (admin or {}).get("vdl")),
        }
        for inst, endpoint, admin in zip(fleet.instances.values(), endpoints, admins, strict=True)
    ]
    return {"nodes": nodes, "pgs": pgs, "instances": instances, "volume_epoch": topology.volume_epoch}


def converged(status: dict) -> bool:
    """Every segment of every PG answers and holds the same SCL."""
    return all(
        p["healthy_segments"] == len(p["members"]) and p["complete_segments"] == len(p["members"])
        for p in status["pgs"]
    )


def problems(status: dict) -> list[str]:
    """Why the fleet is degraded (empty: healthy): a node or instance that does not answer,
    a node whose backup puts are unconditional, a PG with fewer than 6 healthy segments."""
    found = [f"node {n['name']} down" for n in status["nodes"] if not n["alive"]]
    found += [f"instance {i['name']} down ({i['endpoint']})" for i in status.get("instances", []) if not i["alive"]]
    found += [f"node {n['name']}: its backup store lacks conditional writes (puts may overwrite objects)"
              for n in status["nodes"] if n.get("backup_conditional_puts") is False]
    found += [f"pg {p['id']}: {p['healthy_segments']}/{SEGMENTS_PER_PG} healthy segments"
              for p in status["pgs"] if p["healthy_segments"] < SEGMENTS_PER_PG]
    return found
