"""Figures for docs/sql.md (not a test): replica visibility lag and writer failover time
on a fresh playground (`tidemark playground up`: 6 nodes, w1 + r1, supervisor), through
psycopg as a user would.

    .venv/bin/python tests/sql/measure_replica.py [--seconds 10] [--failovers 3]

Lag: one client inserts rows on w1 (autocommit); another polls `max(k)` on r1; a row's
lag is the time from its INSERT being acknowledged to the first r1 answer showing it.
Failover: SIGKILL w1 (`playground kill w1`) while a client keeps inserting; the time to
the first acknowledged INSERT after the kill.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from conftest import tm  # noqa: E402


def _connect(inst: dict, timeout: int = 2) -> psycopg.Connection:
    password = Path(inst["password_file"]).read_text().strip().split(":", 1)[1]
    return psycopg.connect(inst["dsn"], password=password, autocommit=True, connect_timeout=timeout)


def _lag(w1: dict, r1: dict, seconds: float) -> dict:
    acked: dict[int, float] = {}
    lags: list[float] = []
    stop = threading.Event()

    def write() -> None:
        with _connect(w1) as conn:
            k = 0
            while not stop.is_set():
                k += 1
                conn.execute("INSERT INTO lag VALUES (%s)", (k,))
                acked[k] = time.perf_counter()

    def read() -> None:
        seen = 0
        with _connect(r1) as conn:
            while not stop.is_set():
                top = conn.execute("SELECT coalesce(max(k), 0) FROM lag").fetchone()[0]
                now = time.perf_counter()
                for k in range(seen + 1, top + 1):
                    if k in acked:
                        lags.append(max(0.0, now - acked[k]) * 1000)
                seen = max(seen, top)

    threads = [threading.Thread(target=write), threading.Thread(target=read)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    lags.sort()
    return {"rows": len(acked), "lag_p50_ms": round(statistics.median(lags), 2),
            "lag_p99_ms": round(lags[int(len(lags) * 0.99) - 1], 2), "lag_max_ms": round(lags[-1], 2)}


def _failover(directory: Path, w1: dict) -> float:
    done = threading.Event()
    acks: list[float] = []

    def write() -> None:
        conn = None
        while not done.is_set():
            try:
                conn = conn or _connect(w1, 1)
                conn.execute("INSERT INTO fo DEFAULT VALUES")
                acks.append(time.monotonic())
            except psycopg.Error:
                conn = None
                time.sleep(0.02)

    thread = threading.Thread(target=write)
    thread.start()
    time.sleep(1.0)
    assert tm("kill", "w1", "--dir", str(directory)).returncode == 0
    killed = time.monotonic()
    while not any(t > killed for t in acks) and time.monotonic() - killed < 30:
        time.sleep(0.01)
    done.set()
    thread.join(30)
    return round(next(t for t in acks if t > killed) - killed, 2)


def main(seconds: float, failovers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "pg"
        up = tm("up", "--dir", str(directory), "--base-ip", "127.0.0.220", "--json")
        assert up.returncode == 0, up.stderr
        try:
            found = {i["name"]: i for i in json.loads(up.stdout)["instances"]}
            w1, r1 = found["w1"], found["r1"]
            with _connect(w1) as conn:
                conn.execute("CREATE TABLE lag (k INTEGER PRIMARY KEY)")
                conn.execute("CREATE TABLE fo (id INTEGER PRIMARY KEY)")
            out = _lag(w1, r1, seconds)
            out["failover_s"] = []
            for _ in range(failovers):
                out["failover_s"].append(_failover(directory, w1))
                time.sleep(3.5)  # the supervisor restarts one instance at most every 3 s
            return out
        finally:
            tm("down", "--dir", str(directory), timeout=60)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(main(args.seconds, args.failovers)))
