"""Segments on the storage pods, from the placement: PUT each PG's segment (membership,
peers, volume epoch) on the members that lack it or have stale peers, rebuild a member's
lost copy from the others, and drop the stale copies a returning pod still holds."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import placement as pl
from .nodeclient import NodeClient, NodeError
from .status import PodObs

Event = Callable[[str, str, str], None]


async def ensure_segments(nodes: NodeClient, applied: dict[tuple[str, int], str], doc: Mapping[str, Any],
                          pods: Sequence[PodObs], statuses: Mapping[str, Mapping[str, Any] | None],
                          event: Event, bandwidth: int = 0) -> int:
    """PUT every PG's segment on each member pod that is up and lacks it or has stale
    peers. A member that lost its copy (e.g. an emptyDir pod rescheduled) while the PG
    already holds data gets its segment rebuilt from the other members (hydrate).
    APPLIED remembers what each pod was told ((pod, pg) -> generation and membership).
    Returns the number of segments created."""
    urls = {p.name: p.url for p in pods if statuses.get(p.name) is not None}
    done = 0
    seen_epoch: dict[int, int] = {}
    for st in statuses.values():
        for s in (st or {}).get("segments", []):
            seen_epoch[int(s["pg"])] = max(seen_epoch.get(int(s["pg"]), 0), int(s.get("volume_epoch", 0)))
    for pg, ms in pl.memberships(doc).items():
        peers = {m: urls[m] for m in ms.all_members if m in urls}
        # A segment created after a writer sealed the volume starts at the sealed epoch.
        epoch = max(int(doc.get("volume_epoch", 0)), seen_epoch.get(pg, 0))
        body = {"layout": doc["layout"], "membership": ms.to_json(), "peers": peers,
                "volume_epoch": epoch}
        fingerprint = json.dumps([body["membership"], peers], sort_keys=True)
        for member in ms.all_members:
            st = statuses.get(member)
            if st is None:
                continue
            has = any(int(s["pg"]) == pg for s in st.get("segments", []))
            key = (member, pg)
            if has and applied.get(key) == f"{st.get('generation')}:{fingerprint}":
                continue
            try:
                await nodes.put_segment(urls[member], pg, body)
            except NodeError as exc:
                event("Warning", "SegmentCreateFailed", f"pg {pg} on {member}: {exc}")
                continue
            applied[key] = f"{st.get('generation')}:{fingerprint}"
            if not has:
                done += 1
                event("Normal", "SegmentCreated", f"pg {pg} segment on {member}")
                holders = {m: urls[m] for m in ms.members if m != member and m in urls
                           and any(int(x["pg"]) == pg and int(x.get("scl", 0)) > 0
                                   for x in (statuses.get(m) or {}).get("segments", []))}
                if member in ms.members and holders:
                    try:
                        await nodes.hydrate(urls[member], pg, holders, bandwidth)
                        event("Normal", "Hydrating", f"pg {pg}: {member} lost its copy; rebuilding "
                              f"from {', '.join(sorted(holders))}")
                    except NodeError as exc:
                        event("Warning", "HydrateFailed", f"pg {pg} on {member}: {exc}")
    return done


async def drop_orphans(nodes: NodeClient, doc: Mapping[str, Any], pods: Sequence[PodObs],
                       statuses: Mapping[str, Mapping[str, Any] | None], event: Event) -> None:
    """A pod that came back after its segment was moved away holds a stale copy: drop it
    (only when the placement's membership epoch is newer than the copy's)."""
    ms = pl.memberships(doc)
    for p in pods:
        st = statuses.get(p.name)
        for seg in (st or {}).get("segments", []):
            pg = int(seg["pg"])
            m = ms.get(pg)
            if m is None or p.name in m.all_members or int(seg.get("membership_epoch", 0)) >= m.epoch:
                continue
            try:
                await nodes.delete_segment(p.url, pg)
            except NodeError as exc:
                event("Warning", "SegmentDeleteFailed", f"pg {pg} on {p.name}: {exc}")
                continue
            event("Normal", "SegmentDeleted", f"pg {pg}: dropped the stale copy on {p.name}")
