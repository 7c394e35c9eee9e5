"""`tidemark bench sql` with tiny settings only (3 s runs, 2 clients, scale 1: the
machine is shared): both systems answer, the JSON has cli.md's keys (TPC-B, select-only
on a replica and on a standby, replica lag), and nothing the bench started (PostgreSQL
servers, the fleet, temp dirs) is left behind.

Addresses: 127.0.172.x (the fleet, w1 .16, r1 .17); PostgreSQL on 127.0.0.1 free ports."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
import pytest

from tidemark_cli.pg_quorum import available

pytestmark = [pytest.mark.sql, pytest.mark.timeout(300)]

KEYS = ("tidemark_tps", "postgres_tps", "ratio", "tidemark_p50_ms", "tidemark_p99_ms", "postgres_p50_ms",
        "postgres_p99_ms", "redo_bytes_per_txn", "postgres_wal_bytes_per_txn", "by_clients",
        "replica_read_tps", "postgres_standby_read_tps", "replica_read_ratio", "replica_read",
        "replica_lag_p50_ms", "replica_lag_p99_ms", "replica_lag_max_ms", "replica_lag_samples")


def postgres_pids() -> set[int]:
    """Live PostgreSQL processes (an exited postmaster is a zombie until this machine's pid
    1 reaps it: gone, not left running). By name too: a kind node's container running
    beside this test (scripts/test.sh) may have processes of the same uid."""
    return {p.pid for p in psutil.process_iter(["username", "name", "status"])
            if p.info["username"] == "postgres" and p.info["name"] == "postgres"
            and p.info["status"] != psutil.STATUS_ZOMBIE}


@pytest.fixture
def bench_tmp():
    # the bench's temp dirs go here; PostgreSQL runs as `postgres`, so it must be traversable
    directory = Path(tempfile.mkdtemp(prefix="tidemark-test-bench-sql-", dir="/tmp"))
    directory.chmod(0o755)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(available() is not None and not os.environ.get("CI"), reason=f"no PostgreSQL baseline here: {available()}")
def test_bench_sql_tiny_run_reports_both_systems_and_leaves_nothing_behind(bench_tmp: Path) -> None:
    before = postgres_pids()
    result = subprocess.run(
        [sys.executable, "-m", "tidemark_cli.main", "bench", "sql", "--seconds", "3", "--clients", "2",
         "--scale", "1", "--base-ip", "127.0.172.10", "--json"],
        capture_output=True, text=True, timeout=280, env={**os.environ, "TMPDIR": str(bench_tmp)})
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout)
    for key in KEYS:
        assert key in out, key
    assert out["tidemark_tps"] > 0 and out["postgres_tps"] > 0, out
    assert out["tidemark_failed"] == 0 and out["postgres_failed"] == 0, out
    assert out["redo_bytes_per_txn"] > 0 and out["postgres_wal_bytes_per_txn"] > 0, out
    assert set(out["by_clients"]) == {"1", "2"}
    # select-only: r1 and the standby both served reads, none failed
    assert out["replica_read_tps"] > 0 and out["postgres_standby_read_tps"] > 0, out
    assert out["replica_read_ratio"] == round(out["replica_read_tps"] / out["postgres_standby_read_tps"], 3)
    for system in ("tidemark", "postgres"):
        read = out["replica_read"][system]
        assert read["clients"] == 2 and read["failed"] == 0 and read["transactions"] > 0, read
        assert 0 < read["p50_ms"] <= read["p99_ms"], read
    # lag: r1's lag_ms sampled every 50 ms through the 3 s TPC-B runs
    assert out["replica_lag_samples"] >= 10, out
    assert 0 <= out["replica_lag_p50_ms"] <= out["replica_lag_p99_ms"] <= out["replica_lag_max_ms"] < 30_000, out
    for run in out["by_clients"].values():
        assert run["tidemark"]["replica_lag_samples"] > 0 and "replica_lag_p99_ms" not in run["postgres"], run
    assert "client(s)" in result.stderr  # progress on stderr, JSON alone on stdout

    assert list(bench_tmp.iterdir()) == []  # its fleet dir and PostgreSQL dirs are gone
    assert postgres_pids() - before == set()  # no PostgreSQL server or backend left
    left = [p.pid for p in psutil.process_iter(["cmdline", "status"]) if p.info["status"] != psutil.STATUS_ZOMBIE
            and any(str(bench_tmp) in a for a in p.info["cmdline"] or [])]
    assert left == []  # nor a storage node or the writer instance
