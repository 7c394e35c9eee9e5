"""The end of the snapshot phase: the segment's chain re-based on the snapshot."""

from __future__ import annotations

from tidemark_protocol.segment import SegmentMeta

from ..segments import Segment
from ..state import NodeState
from .errors import check_live


async def install_base(state: NodeState, seg: Segment, info: dict) -> None:
    """Re-base the segment's chain on the snapshot (Segment.rebase, SegmentLog.rebase):
    floor = SCL = base, the source's truncation ranges applied. Synchronous up to the
    commit, so no intake interleaves; records that arrived meanwhile are kept (those
    above the base relink; any at or below it are covered by the snapshot)."""
    check_live(seg)
    base = int(info["base_lsn"])
    src = info.get("meta", {})
    src_meta = SegmentMeta.from_json(src["seg"]) if "seg" in src else SegmentMeta(seg.pg)
    seg.pgmrpl = max(seg.pgmrpl, int(src.get("pgmrpl", 0)))
    deletes = seg.rebase(state.store, base, src_meta.truncations, src_meta.vdl_hint)
    await state.committer.submit([seg], deletes=deletes)
