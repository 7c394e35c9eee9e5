"""Crash recovery as I/O around the pure planner: gather reports, plan, seal."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import structlog

from tidemark_protocol.quorum import READ_QUORUM, WRITE_QUORUM, has_read_quorum
from tidemark_protocol.records import Record
from tidemark_protocol.recovery import NoReadQuorum, RecoveryPlan, SegmentReport, plan_recovery

from . import node_client
from .topology import Topology

log = structlog.get_logger("tidemark.writer.recovery")


async def _gather_reports(
    session: aiohttp.ClientSession,
    topology: Topology,
    deadline: float,
    only: set[tuple[int, str]] | None = None,
) -> dict[int, list[SegmentReport]]:
    """Reports from a read quorum of every PG (restricted to `only` segments if given)."""
    reports: dict[int, dict[str, SegmentReport]] = {pg: {} for pg in topology.memberships}
    while True:
        jobs = []
        for pg, membership in topology.memberships.items():
            for member in membership.all_members:
                if only is not None and (pg, member) not in only:
                    continue
                if member not in reports[pg] and member in topology.nodes:
                    jobs.append((pg, member, node_client.fetch_report(session, topology.nodes[member], pg)))
        results = await asyncio.gather(*(j[2] for j in jobs), return_exceptions=True)
        for (pg, member, _), result in zip(jobs, results, strict=True):
            if isinstance(result, SegmentReport):
                reports[pg][member] = result
        missing = [
            pg
            for pg, m in topology.memberships.items()
            if not has_read_quorum(m, reports[pg].keys())
        ]
        if not missing:
            return {pg: list(rs.values()) for pg, rs in reports.items()}
        if time.monotonic() > deadline:
            raise NoReadQuorum(f"no read quorum for pgs {missing} before the deadline")
        await asyncio.sleep(0.2)


async def seal_volume(
    session: aiohttp.ClientSession,
    topology: Topology,
    volume_epoch: int,
    truncations: list[tuple[int, int]],
    deadline: float,
    need: int = WRITE_QUORUM,
) -> dict[tuple[int, str], int]:
    """Record the epoch and truncations in `need` segments of every PG member set (a
    write quorum by default); returns the SCLs of the segments sealed."""
    sealed: dict[tuple[int, str], int] = {}
    pending = set(topology.nodes)
    while True:
        names = sorted(pending)
        results = await asyncio.gather(
            *(
                node_client.seal(session, topology.nodes[n], volume_epoch, truncations, topology.pgs_of(n))
                for n in names
            ),
            return_exceptions=True,
        )
        for name, result in zip(names, results, strict=True):
            if isinstance(result, dict):
                pending.discard(name)
                for pg, scl in result.items():
                    sealed[(pg, name)] = scl
            elif isinstance(result, node_client.NodeRequestError) and result.code == "stale_epoch":
                raise result  # a newer writer exists: we are fenced
        short = [
            pg
            for pg, m in topology.memberships.items()
            if any(sum((pg, n) in sealed for n in s) < need for s in m.sets)
        ]
        if not short:
            return sealed
        if time.monotonic() > deadline:
            raise NoReadQuorum(f"could not seal a write quorum of pgs {short}")
        await asyncio.sleep(0.2)


async def recover(
    session: aiohttp.ClientSession, topology: Topology, lal: int, timeout: float = 60.0
) -> tuple[RecoveryPlan, dict[tuple[int, str], int], dict[int, list[Record]]]:
    """Plan recovery, seal the volume and fetch the records to re-replicate."""
    deadline = time.monotonic() + timeout
    # 1. Learn the epochs in use, then fence: seal a read quorum of every PG at a new
    #    epoch before trusting its reports. A segment that reported while still taking
    #    the old writer's frames could otherwise help that writer acknowledge a commit
    #    this recovery is about to truncate.
    first = await _gather_reports(session, topology, deadline)
    fence_epoch = max([topology.volume_epoch] + [r.volume_epoch for rs in first.values() for r in rs]) + 1
    fenced = await seal_volume(session, topology, fence_epoch, [], deadline, need=READ_QUORUM)
    # 2. Reports from fenced segments only: they can no longer change under us.
    reports = await _gather_reports(session, topology, deadline, only=set(fenced))
    plan = plan_recovery(reports, topology.memberships, lal, min_epoch=fence_epoch)
    log.info(
        "recovery_planned",
        epoch=plan.volume_epoch,
        vdl=plan.vdl,
        vcl=plan.vcl,
        truncation=plan.truncation,
        rereplicate=sum(len(v) for v in plan.to_rereplicate.values()),
    )
    sealed = await seal_volume(session, topology, plan.volume_epoch, plan.truncations, deadline)
    rereplicate: dict[int, list[Record]] = {}
    for pg, lsns in plan.to_rereplicate.items():
        found: dict[int, Record] = {}
        low, high = min(lsns) - 1, max(lsns)
        for holder in sorted({h for hs in lsns.values() for h in hs}):
            try:
                records = await node_client.fetch_records(session, topology.nodes[holder], pg, low, high)
            except (aiohttp.ClientError, OSError, node_client.NodeRequestError):
                continue
            for record in records:
                if record.lsn in lsns:
                    found.setdefault(record.lsn, record)
        missing = set(lsns) - set(found)
        if missing:
            raise NoReadQuorum(f"pg {pg}: holders no longer serve lsns {sorted(missing)[:5]}")
        rereplicate[pg] = [found[lsn] for lsn in sorted(found)]
    return plan, sealed, rereplicate
