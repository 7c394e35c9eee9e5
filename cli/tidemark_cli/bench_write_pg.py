"""The PostgreSQL rows of `tidemark bench write`: the bench's transactions (4 rows of
200 bytes each, one commit) through pgbench against PostgreSQL 15 with 5 streaming
standbys and `ANY 3` quorum commit (pg_quorum.py), at the same number in flight as
Tidemark's closed loop, then open loop (`pgbench -R`) at half of PostgreSQL's maximum.

Latencies are pgbench's per-transaction log (`-l`): from the transaction's start, not
from its schedule, as Tidemark's open loop measures them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tidemark_compute.bench_write import RECORD_PAYLOAD, RECORDS_PER_MTR

from .bench_sql import Run, parse_pgbench
from .pg_quorum import PgQuorum, available

TABLE = "bench_records"
# One connection per transaction in flight, plus the bench's own psql calls.
EXTRA_CONNECTIONS = 16


def script() -> str:
    rows = ", ".join([f"(repeat('x', {RECORD_PAYLOAD}))"] * RECORDS_PER_MTR)
    return f"BEGIN;\nINSERT INTO {TABLE} (payload) VALUES {rows};\nEND;\n"


def _args(pg: PgQuorum, clients: int, seconds: float, script_path: Path, prefix: Path,
          rate: float | None = None) -> list[str]:
    jobs = max(1, min(clients, os.cpu_count() or 1))
    return [*pg.pgbench_args(), "-n", "-c", str(clients), "-j", str(jobs), "-T", str(max(1, round(seconds))),
            "-f", str(script_path), "-l", f"--log-prefix={prefix}", *(["-R", f"{rate:.1f}"] if rate else []),
            "postgres"]


def summary(run: Run) -> dict:
    return {
        "commits_per_s": round(run.tps, 1),
        "records_per_s": round(run.tps * RECORDS_PER_MTR, 1),
        "p50_ms": run.percentile_ms(50),
        "p99_ms": run.percentile_ms(99),
        "transactions": run.processed,
        "failed": run.failed,
    }


def bench_postgres_writes(seconds: float, clients: int, say: Callable[[str], None]) -> dict:
    """PostgreSQL's maximum at `clients` in flight, then its p99 at half that rate."""
    why_not = available()
    if why_not is not None:
        say(f"  postgres baseline skipped: {why_not}")
        return {"skipped": why_not}
    say(f"[bold]postgres[/bold] 15: primary + 5 standbys, ANY 3; {RECORDS_PER_MTR} rows of "
        f"{RECORD_PAYLOAD} B per transaction, {clients} in flight, {seconds}s")
    with PgQuorum(say) as pg:
        pg.start([f"max_connections = {clients + EXTRA_CONNECTIONS}"])
        pg.sql(f"CREATE TABLE {TABLE} (payload text)")
        script_path = pg.dir / "write.sql"
        script_path.write_text(script())
        os.chmod(script_path, 0o644)  # pgbench runs as the postgres user
        pg.run("pgbench", *_args(pg, clients, min(2.0, seconds), script_path, pg.dir / "warm"), timeout=seconds + 120)
        for log in pg.dir.glob("warm.*"):
            log.unlink()
        out = pg.run("pgbench", *_args(pg, clients, seconds, script_path, pg.dir / "max"), timeout=seconds + 120)
        top = parse_pgbench(out.stdout + out.stderr, clients, pg.dir / "max")
        say(f"  max: {top.tps:.0f} commits/s, p50 {top.percentile_ms(50)} ms, p99 {top.percentile_ms(99)} ms")
        rate = top.tps / 2
        out = pg.run("pgbench", *_args(pg, clients, seconds, script_path, pg.dir / "half", rate),
                     timeout=seconds + 120)
        half = parse_pgbench(out.stdout + out.stderr, clients, pg.dir / "half")
        say(f"  at {rate:.0f} commits/s offered: p50 {half.percentile_ms(50)} ms, p99 {half.percentile_ms(99)} ms")
    return {**summary(top), "half_rate": {**summary(half), "offered_commits_per_s": round(rate, 1)},
            "half_rate_p99_ms": half.percentile_ms(99)}
