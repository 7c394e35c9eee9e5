"""The workload's model of what must be visible, and the check against what is.

Each mini-transaction writes 64-byte slots whose content names the transaction, so a
read tells exactly whose write a slot holds. For every slot the newest acknowledged
write (by CPL LSN) must be visible, or a newer in-doubt one (sent, outcome unknown);
an in-doubt transaction is all-or-nothing; anything else is a loss or a corruption.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

SLOT = 64
_HEAD = struct.Struct("<QQI")  # mtr id, page, slot


_FILL = SLOT - _HEAD.size
_RAMP = bytes(range(256)) * 2  # a byte ramp: any window of it is cheap to slice


def slot_content(mtr: int, page: int, slot: int) -> bytes:
    start = (mtr * 131 + page * 17 + slot * 7) & 0xFF
    return _HEAD.pack(mtr, page, slot) + _RAMP[start : start + _FILL]


def parse_slot(data: bytes, page: int, slot: int) -> int | None:
    """The mtr id held by a slot, None if empty; raises ValueError if it is garbage."""
    if data == bytes(SLOT):
        return None
    mtr, p, s = _HEAD.unpack_from(data)
    if (p, s) != (page, slot) or data != slot_content(mtr, page, slot):
        raise ValueError(f"slot ({page},{slot}) holds bytes no transaction wrote")
    return mtr


@dataclass(slots=True)
class Mtr:
    mtr: int
    cpl: int
    slots: list[tuple[int, int]]
    acked: bool = False
    commit_time: float = 0.0


@dataclass
class VerifyResult:
    checked_slots: int = 0
    acked: int = 0
    in_doubt: int = 0
    lost: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.partial or self.corrupt)

    def to_json(self) -> dict:
        return {
            "checked_slots": self.checked_slots,
            "acked": self.acked,
            "in_doubt": self.in_doubt,
            "lost": len(self.lost),
            "partial": len(self.partial),
            "corrupt": len(self.corrupt),
            "examples": (self.lost + self.partial + self.corrupt)[:5],
        }


class Model:
    def __init__(self, log_path: Path | None = None) -> None:
        self.mtrs: dict[int, Mtr] = {}
        self.writes: dict[tuple[int, int], list[int]] = {}  # slot -> mtr ids
        self.log_path = log_path
        self._log = None
        if log_path is not None:
            if log_path.exists():
                self._load(log_path)
            self._log = log_path.open("a", buffering=1)

    @property
    def next_id(self) -> int:
        return max(self.mtrs, default=0) + 1

    def _load(self, path: Path) -> None:
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if entry["k"] == "intent":
                self._intent(entry["mtr"], entry["cpl"], [tuple(s) for s in entry["slots"]])
            elif entry["k"] == "ack" and entry["mtr"] in self.mtrs:
                self.mtrs[entry["mtr"]].acked = True
                self.mtrs[entry["mtr"]].commit_time = entry.get("t", 0.0)

    def _intent(self, mtr: int, cpl: int, slots: list[tuple[int, int]]) -> None:
        self.mtrs[mtr] = Mtr(mtr, cpl, slots)
        for slot in slots:
            self.writes.setdefault(slot, []).append(mtr)

    def intent(self, mtr: int, cpl: int, slots: list[tuple[int, int]]) -> None:
        self._intent(mtr, cpl, slots)
        if self._log is not None:
            self._log.write(json.dumps({"k": "intent", "mtr": mtr, "cpl": cpl, "slots": slots}) + "\n")
            self._log.flush()

    def ack(self, mtr: int, commit_time: float) -> None:
        self.mtrs[mtr].acked = True
        self.mtrs[mtr].commit_time = commit_time
        if self._log is not None:
            self._log.write(json.dumps({"k": "ack", "mtr": mtr, "t": commit_time}) + "\n")

    def close(self) -> None:
        if self._log is not None:
            self._log.close()

    def pages(self) -> list[int]:
        return sorted({page for page, _slot in self.writes})

    def verify(self, pages: dict[int, bytes]) -> VerifyResult:
        result = VerifyResult()
        result.acked = sum(m.acked for m in self.mtrs.values())
        result.in_doubt = sum(not m.acked for m in self.mtrs.values())
        visible: dict[tuple[int, int], Mtr | None] = {}
        for (page, slot), writers in self.writes.items():
            result.checked_slots += 1
            data = pages[page][slot * SLOT : (slot + 1) * SLOT]
            try:
                holder_id = parse_slot(data, page, slot)
            except ValueError as exc:
                result.corrupt.append(str(exc))
                continue
            if holder_id is not None and holder_id not in self.mtrs:
                result.corrupt.append(f"slot ({page},{slot}) holds unknown mtr {holder_id}")
                continue
            holder = self.mtrs[holder_id] if holder_id is not None else None
            visible[(page, slot)] = holder
            if holder is not None and (page, slot) not in holder.slots:
                result.corrupt.append(f"slot ({page},{slot}) holds mtr {holder_id} that never wrote it")
                continue
            acked = [self.mtrs[w] for w in writers if self.mtrs[w].acked]
            newest_acked = max(acked, key=lambda m: m.cpl, default=None)
            if newest_acked is not None and (holder is None or holder.cpl < newest_acked.cpl):
                result.lost.append(
                    f"slot ({page},{slot}): acked mtr {newest_acked.mtr} (lsn {newest_acked.cpl}) "
                    f"missing; holds {holder_id}"
                )
        # An in-doubt transaction seen anywhere must be seen (or overwritten by a newer
        # visible write) in every slot it wrote.
        for mtr in self.mtrs.values():
            if mtr.acked or not any(visible.get(s) is mtr for s in mtr.slots):
                continue
            for s in mtr.slots:
                holder = visible.get(s)
                if holder is None or holder.cpl < mtr.cpl:
                    result.partial.append(f"in-doubt mtr {mtr.mtr} visible only in part (slot {s})")
                    break
        return result
