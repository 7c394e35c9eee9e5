"""A zone back from an outage catches up by gossip even after new writers moved the
volume on (each new epoch jumps the LSNs by its allocation window, which used to void
the peers' LSN tail of kept log: the returned nodes never caught up yet looked healthy,
and the next zone loss stopped every write; found on kind)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]

BASE = "127.0.163.10"  # 9 nodes: .10 - .18


def tm(*args: object, timeout: float = 120) -> str:
    done = subprocess.run([sys.executable, "-m", "tidemark_cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def scls(d: Path) -> dict[str, dict[int, int]]:
    done = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", "status", "--dir", str(d),
                           "--json"], capture_output=True, text=True, timeout=60)
    return {n["name"]: {s["pg"]: s["scl"] for s in n.get("segments", [])} for n in json.loads(done.stdout)["nodes"]}


def test_a_returned_zone_catches_up_after_two_new_writer_epochs(tmp_path: Path) -> None:
    d = tmp_path / "fleet"
    tm("playground", "up", "--dir", d, "--nodes-per-zone", 3, "--instances", 0, "--no-repair", "--base-ip", BASE)
    try:
        tm("workload", "--dir", d, "--seconds", 4, "--concurrency", 16)
        for n in ("b1", "b2", "b3"):
            tm("playground", "kill", n, "--dir", d)
        tm("workload", "--dir", d, "--seconds", 8, "--concurrency", 16)  # a new epoch, zone b away
        time.sleep(12)  # a few GC passes on the peers
        writer = subprocess.Popen([sys.executable, "-m", "tidemark_cli.main", "workload", "--dir", str(d),
                                   "--seconds", "25", "--concurrency", "8", "--verify"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            time.sleep(3)
            for n in ("b1", "b2", "b3"):
                tm("playground", "restart", n, "--dir", d)
            deadline = time.monotonic() + 40
            while True:
                now = scls(d)
                behind = {n: {pg: s for pg, s in segs.items()
                              if s < min(now[m][pg] for m in now if m[0] != "b" and pg in now[m]) - 1_000_000}
                          for n, segs in now.items() if n[0] == "b"}
                if not any(behind.values()):
                    break
                assert time.monotonic() < deadline, f"zone b never caught up: {behind} (all: {now})"
                time.sleep(1)
        finally:
            out, _ = writer.communicate(timeout=120)
        assert writer.returncode == 0, out[-2000:]
    finally:
        subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", "down", "--dir", str(d)],
                       capture_output=True, timeout=120)
