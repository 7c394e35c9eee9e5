"""`tidemark bench write` with tiny settings only (2 s runs, 8 in flight: the machine is
shared): Tidemark and PostgreSQL both commit, the JSON has cli.md's keys
(`postgres.commits_per_s`, `postgres.p99_ms`, `postgres.half_rate_p99_ms`,
`vs_postgres.throughput_ratio`, `vs_postgres.half_rate_p99_ratio`), and nothing the bench
started is left behind.

Addresses: 127.0.173.x (the bench fleet); PostgreSQL on 127.0.0.1 free ports."""

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

pytestmark = [pytest.mark.process, pytest.mark.timeout(300)]


def postgres_pids() -> set[int]:
    """Live PostgreSQL processes, by user and name (a kind node's container running beside
    this test may have processes of the same uid)."""
    return {p.pid for p in psutil.process_iter(["username", "name", "status"])
            if p.info["username"] == "postgres" and p.info["name"] == "postgres"
            and p.info["status"] != psutil.STATUS_ZOMBIE}


@pytest.mark.skipif(available() is not None and not os.environ.get("CI"), reason=f"no PostgreSQL baseline here: {available()}")
def test_bench_write_tiny_run_reports_tidemark_beside_postgres() -> None:
    work = Path(tempfile.mkdtemp(prefix="tidemark-test-bench-write-", dir="/tmp"))
    work.chmod(0o755)  # PostgreSQL runs as `postgres`: its temp dir must be reachable
    before = postgres_pids()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tidemark_cli.main", "bench", "write", "--seconds", "2", "--concurrency", "8",
             "--base-ip", "127.0.173.10", "--json"],
            capture_output=True, text=True, timeout=280, env={**os.environ, "TMPDIR": str(work)})
        assert result.returncode == 0, result.stderr[-3000:]
        out = json.loads(result.stdout)
        assert out["commits_per_s"] > 0 and out["postgres"]["commits_per_s"] > 0, out
        assert out["postgres"]["failed"] == 0 and out["postgres"]["half_rate_p99_ms"] > 0, out["postgres"]
        assert out["at_postgres_half_rate"]["commits_per_s"] > 0, out
        assert out["vs_postgres"]["throughput_ratio"] > 0 and out["vs_postgres"]["half_rate_p99_ratio"] > 0, out
        assert out["tls_off"]["commits_per_s"] > 0 and out["tls_throughput_ratio"] > 0, out  # TLS's cost
        assert list(work.iterdir()) == [], "the bench left files behind"
        assert postgres_pids() <= before, "PostgreSQL servers left running"
    finally:
        shutil.rmtree(work, ignore_errors=True)
