"""Quorum math over a PG's membership, including the dual quorum of a membership change.

Six segments, writes need 4 of them, reads 3: any read quorum meets any write quorum
(3 + 4 > 6), and two write quorums always overlap (4 + 4 > 6). While a segment F is
being replaced by G the PG has two member sets; a write must reach a write quorum of
both, a read (recovery's reports) a read quorum of the old set: G may not be hydrated
yet, and a commit acknowledged before the change is only in a write quorum of the old
set (a read quorum of the new set such as {G, A, B} can miss it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SEGMENTS_PER_PG = 6
WRITE_QUORUM = 4
READ_QUORUM = 3


@dataclass(frozen=True, slots=True)
class Membership:
    epoch: int
    members: tuple[str, ...]
    # Set only during a membership change: the member set the PG is moving to.
    next_members: tuple[str, ...] | None = None

    @property
    def sets(self) -> tuple[tuple[str, ...], ...]:
        return (self.members,) if self.next_members is None else (self.members, self.next_members)

    @property
    def all_members(self) -> tuple[str, ...]:
        seen = dict.fromkeys(self.members)
        seen.update(dict.fromkeys(self.next_members or ()))
        return tuple(seen)

    def begin_replace(self, old: str, new: str) -> Membership:
        """Epoch+1: {A..E,F} ∪ {A..E,G}."""
        if self.next_members is not None:
            raise ValueError("a membership change is already in progress")
        if old not in self.members or new in self.members:
            raise ValueError(f"cannot replace {old} by {new} in {self.members}")
        target = tuple(new if m == old else m for m in self.members)
        return Membership(self.epoch + 1, self.members, target)

    def finish_replace(self) -> Membership:
        """Epoch+2: drop the replaced segment."""
        if self.next_members is None:
            raise ValueError("no membership change in progress")
        return Membership(self.epoch + 1, self.next_members, None)

    def abort_replace(self) -> Membership:
        """Reverse step 1 while the old segment's data is still needed."""
        if self.next_members is None:
            raise ValueError("no membership change in progress")
        return Membership(self.epoch + 1, self.members, None)

    def to_json(self) -> dict:
        return {
            "epoch": self.epoch,
            "members": list(self.members),
            "next_members": list(self.next_members) if self.next_members else None,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> Membership:
        """Strict: anything but {epoch, members: [names], next_members: [names] | null}
        is a ValueError (what a node answers 400 to)."""
        if not isinstance(data, Mapping):
            raise ValueError("a membership is an object")
        nxt = data.get("next_members")
        return cls(int(data["epoch"]), _names(data["members"]), _names(nxt) if nxt else None)


def _names(value: object) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value or not all(isinstance(n, str) and n for n in value) \
            or len(set(value)) != len(value):
        raise ValueError(f"members must be a list of distinct node names, not {value!r}")
    return tuple(value)


def kth_highest(values: Iterable[int], k: int) -> int:
    """The value that at least k of `values` reach (0 if fewer than k values)."""
    ordered = sorted(values, reverse=True)
    return ordered[k - 1] if len(ordered) >= k else 0


@dataclass(slots=True)
class QuorumTracker:
    """Per-PG view of its segments' SCLs, giving PGCL: the highest LSN in a write quorum."""

    membership: Membership
    scl: dict[str, int] = field(default_factory=dict)

    def observe(self, segment: str, scl: int) -> None:
        if scl > self.scl.get(segment, 0):
            self.scl[segment] = scl

    def reset(self, segment: str, scl: int) -> None:
        """A segment's SCL can move down only through truncation (recovery)."""
        self.scl[segment] = scl

    def pgcl(self) -> int:
        return min(
            kth_highest((self.scl.get(m, 0) for m in s), WRITE_QUORUM)
            for s in self.membership.sets
        )

    def complete_segments(self, lsn: int) -> list[str]:
        """Segments whose SCL covers `lsn`, best first (highest SCL)."""
        members = self.membership.all_members
        return sorted((m for m in members if self.scl.get(m, 0) >= lsn), key=lambda m: -self.scl.get(m, 0))


def has_write_quorum(membership: Membership, acked: Iterable[str]) -> bool:
    acked_set = set(acked)
    return all(len(acked_set & set(s)) >= WRITE_QUORUM for s in membership.sets)


def has_read_quorum(membership: Membership, answered: Iterable[str]) -> bool:
    # The old set meets every write quorum of a commit acknowledged before the change
    # (old set) and during it (both sets); the new set only the latter.
    return len(set(answered) & set(membership.members)) >= READ_QUORUM
