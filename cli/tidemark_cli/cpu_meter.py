"""CPU time spent by groups of processes over one benchmark run (psutil), so a bench
says where a transaction's time goes next to its throughput: on 2 cores, CPU per
transaction is a ceiling on tps before any waiting.

A group is a list of root pids; each root counts with its descendants, live ones by
their own times and exited ones through their parent's reaped-children times (how a
PostgreSQL postmaster's short-lived backends are counted)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import psutil


def _own(times: psutil._common.pcputimes) -> float:  # type: ignore[name-defined]
    return times.user + times.system + times.children_user + times.children_system


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of `pid` and every descendant, so far (0 if it is gone)."""
    try:
        root = psutil.Process(pid)
        total = _own(root.cpu_times())
        descendants = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0.0
    for proc in descendants:
        try:
            total += _own(proc.cpu_times())
        except psutil.NoSuchProcess:
            pass  # exited between the listing and now: its parent has its times (or will)
    return total


def machine_busy_seconds() -> float:
    """CPU seconds of the whole machine not idle (every process, the benchmark client too)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


class CpuMeter:
    """`with CpuMeter({"nodes": [..], "writer": [..]}) as cpu: ...`, then
    `cpu.per_txn_ms(n)`: each group's CPU milliseconds per transaction, their total
    and the whole machine's busy time (which includes the load generator)."""

    def __init__(self, groups: Mapping[str, Iterable[int]]) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}

    def _sample(self) -> dict[str, float]:
        out = {name: sum(tree_cpu_seconds(pid) for pid in pids) for name, pids in self.groups.items()}
        out["machine"] = machine_busy_seconds()
        return out

    def __enter__(self) -> CpuMeter:
        self.before = self._sample()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.after = self._sample()

    def per_txn_ms(self, transactions: int) -> dict[str, float] | None:
        if not transactions or not self.after:
            return None
        spent = {name: self.after[name] - self.before[name] for name in self.after}
        out = {name: round(spent[name] * 1000 / transactions, 3) for name in self.groups}
        out["total"] = round(sum(spent[name] for name in self.groups) * 1000 / transactions, 3)
        out["machine"] = round(spent["machine"] * 1000 / transactions, 3)
        return out
