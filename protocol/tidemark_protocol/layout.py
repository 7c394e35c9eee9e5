"""Volume geometry: how pages map onto protection groups."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class VolumeLayout:
    pg_count: int
    pages_per_pg: int
    page_size: int = 4096

    def __post_init__(self) -> None:
        if self.pg_count < 1 or self.pages_per_pg < 1 or self.page_size < 16:
            raise ValueError(f"invalid volume layout {self}")

    @property
    def page_count(self) -> int:
        return self.pg_count * self.pages_per_pg

    def pg_of(self, page: int) -> int:
        if not 0 <= page < self.page_count:
            raise ValueError(f"page {page} outside the volume (0..{self.page_count - 1})")
        return page // self.pages_per_pg

    def to_json(self) -> dict:
        return {"pg_count": self.pg_count, "pages_per_pg": self.pages_per_pg, "page_size": self.page_size}

    @classmethod
    def from_json(cls, data: dict) -> VolumeLayout:
        if not isinstance(data, dict):
            raise ValueError("a layout is an object")
        return cls(int(data["pg_count"]), int(data["pages_per_pg"]), int(data.get("page_size", 4096)))
