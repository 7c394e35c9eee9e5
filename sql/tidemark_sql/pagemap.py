"""Where SQLite's pages live in the volume.

PGs are contiguous page ranges, so SQLite page i (0-based file offset i*page_size) goes
round-robin over the PGs: a small database is spread over every PG instead of
landing wholly in PG 0. SQLite page 1 (index 0) is volume page 0.
"""

from __future__ import annotations

from tidemark_protocol.layout import VolumeLayout


class PageMap:
    def __init__(self, layout: VolumeLayout) -> None:
        self.layout = layout
        self.page_size = layout.page_size
        self.capacity = layout.page_count  # SQLite pages the volume can hold

    def volume_page(self, index: int) -> int:
        """Volume page of SQLite page `index` (0-based)."""
        if not 0 <= index < self.capacity:
            raise ValueError(f"database page {index + 1} is beyond the volume ({self.capacity} pages)")
        pg = index % self.layout.pg_count
        return pg * self.layout.pages_per_pg + index // self.layout.pg_count

    def sqlite_index(self, volume_page: int) -> int:
        """The inverse of volume_page (a replica maps the feed's changed pages back)."""
        pg, offset = divmod(volume_page, self.layout.pages_per_pg)
        return offset * self.layout.pg_count + pg
