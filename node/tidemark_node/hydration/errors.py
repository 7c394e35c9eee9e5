"""Why a hydration (or one source of it) stopped."""

from __future__ import annotations

from ..segments import Segment


class SourceError(Exception):
    """One source could not serve a piece; another may."""


class HydrationError(Exception):
    pass


def check_live(seg: Segment) -> None:
    if seg.deleted:
        raise HydrationError(f"pg {seg.pg} was deleted")
