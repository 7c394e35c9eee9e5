"""`tidemark bench sql`: pgbench TPC-B against a Tidemark writer instance (w1) on a
6-node playground fleet with one read replica (r1) and, in the same run, against
PostgreSQL 15 with 5 streaming standbys and ANY 3 quorum commit (pg_quorum.py): the
same geometry, 6 copies, commit on 4. One after the other (never both at once: they
would share the CPUs).

Per system: `pgbench -i -I dtGvp -s SCALE` (the init Tidemark documents: server-side
generate_series, no COPY), then the builtin TPC-B script with `-n` at 1 client and
at N clients for S seconds each. tps and average latency are pgbench's own lines;
p50/p99 come from its per-transaction log (`-l`). Bytes per transaction:
- Tidemark: the storage nodes' intake counter `tidemark_received_bytes_total` (/metrics:
  bytes of WriteBatch frames the writer sent, framing included) summed over the
  nodes before and after a run, divided by the committed transactions and by the 6
  copies (every PG has a segment on every node): redo bytes per copy per transaction
  (`redo_bytes_shipped_per_txn` is all 6 copies).
- PostgreSQL: `pg_wal_lsn_diff(pg_current_wal_lsn(), before)` on the primary (WAL
  generated once; the standbys receive that stream each).
Replicas: after the TPC-B runs, pgbench's builtin select-only script (`-S`, N
clients) against r1 and against the standby s1 (`replica_read_tps`,
`postgres_standby_read_tps`). Replica lag: r1's `lag_ms` (admin /v1/status) sampled
every 50 ms during each Tidemark TPC-B run (replica_lag.py), p50/p99/max.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tidemark_compute.topology import load_fleet_tls
from tidemark_playground import fleet as fleet_mod

from .cpu_meter import CpuMeter
from .pg_quorum import PG_BIN, PgQuorum, available
from .replica_lag import LagSampler, percentile

PGBENCH = PG_BIN / "pgbench"
_BYTES_RECEIVED = re.compile(r"^tidemark_received_bytes_total(?:\{[^}]*\})?\s+([0-9.eE+]+)", re.MULTILINE)
COPIES = 6  # segments per PG: one on each of the 6 nodes


@dataclass
class Run:
    clients: int
    tps: float
    latency_avg_ms: float
    processed: int
    failed: int
    latencies_us: list[int] = field(default_factory=list, repr=False)
    bytes_per_txn: float | None = None  # redo per copy (Tidemark) / WAL (PostgreSQL)
    shipped_per_txn: float | None = None  # Tidemark: all copies
    lag: dict | None = None  # Tidemark TPC-B: the replica's lag meanwhile (LagSampler.summary)
    cpu_ms_per_txn: dict | None = None  # CpuMeter.per_txn_ms: the servers' CPU per transaction

    def percentile_ms(self, q: float) -> float | None:
        value = percentile([float(v) for v in self.latencies_us], int(q))
        return None if value is None else round(value / 1000, 3)

    def summary(self) -> dict:
        return {**self._summary(), **(self.lag or {})}

    def _summary(self) -> dict:
        return {
            "clients": self.clients,
            "tps": round(self.tps, 1),
            "latency_avg_ms": round(self.latency_avg_ms, 3),
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "transactions": self.processed,
            "failed": self.failed,
            "bytes_per_txn": None if self.bytes_per_txn is None else round(self.bytes_per_txn, 1),
            "cpu_ms_per_txn": self.cpu_ms_per_txn,
        }


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    if m is None:
        raise RuntimeError(f"pgbench output has no {pattern!r}:\n{text[-2000:]}")
    return float(m.group(1))


def parse_pgbench(output: str, clients: int, log_prefix: Path) -> Run:
    """pgbench's summary lines, and every transaction's latency from its -l log files
    (`client_id txn_no latency_us script_no epoch epoch_us` per line)."""
    latencies: list[int] = []
    for path in log_prefix.parent.glob(log_prefix.name + ".*"):
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]))
        path.unlink()
    return Run(clients=clients, tps=_number(r"tps = ([0-9.]+)", output),
               latency_avg_ms=_number(r"latency average = ([0-9.]+) ms", output),
               processed=int(_number(r"number of transactions actually processed: (\d+)", output)),
               failed=int(_number(r"number of failed transactions: (\d+)", output)),
               latencies_us=latencies)


def _pgbench(cmd: list[str], timeout: float, env: dict[str, str], cwd: Path) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd,
                            stdin=subprocess.DEVNULL)
    out = result.stdout + result.stderr
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed ({result.returncode}): {out.strip()[-2000:]}")
    return out


def _tpcb_args(clients: int, seconds: float, log_prefix: Path, select_only: bool = False) -> list[str]:
    """pgbench's builtin TPC-B (or select-only, `-S`) script, no vacuum (`-n`)."""
    jobs = max(1, min(clients, os.cpu_count() or 1))
    return ["-n", *(["-S"] if select_only else []), "-c", str(clients), "-j", str(jobs),
            "-T", str(max(1, round(seconds))), "-l", f"--log-prefix={log_prefix}"]


def _bytes_received(fleet: fleet_mod.Fleet) -> int:
    total = 0.0
    trust = load_fleet_tls(fleet.dir)
    for node in fleet.nodes.values():
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=10, context=trust) as resp:
            text = resp.read().decode()
        total += sum(float(v) for v in _BYTES_RECEIVED.findall(text))
    return int(total)


def _say_run(say: Callable[[str], None], label: str, run: Run, extra: str = "") -> None:
    cpu = run.cpu_ms_per_txn
    if cpu:
        extra += ", CPU/txn " + " ".join(f"{k} {v:.2f}" for k, v in cpu.items()) + " ms"
    say(f"  {label}: {run.tps:.0f} tps, p50 {run.percentile_ms(50)} ms, p99 {run.percentile_ms(99)} ms, "
        f"failed {run.failed}{extra}")


async def bench_tidemark(work: Path, client_counts: list[int], seconds: float, scale: int, base_ip: str,
                         say: Callable[[str], None]) -> tuple[list[Run], Run]:
    """The TPC-B runs on w1 (r1's lag sampled meanwhile), then select-only on r1."""
    # 4 PGs; scale 1 is ~3,000 SQLite pages (accounts + its index), history grows per txn
    pages_per_pg = 2048 + scale * 1024
    say(f"[bold]tidemark[/bold]: 6-node playground fleet + writer w1 + replica r1 on {base_ip} "
        f"({4 * pages_per_pg * 4096 >> 20} MiB volume)")
    fleet, _topology = await fleet_mod.up(work / "fleet", 2, 4, pages_per_pg, 4096, base_ip, instances=2)
    try:
        inst, replica = fleet.instances["w1"], fleet.instances["r1"]
        if replica.admin_url is None:
            raise RuntimeError("replica r1 has no admin endpoint: its lag cannot be sampled")
        password = Path(inst.password_file).read_text().strip().splitlines()[0].split(":", 1)[1]
        env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
        conn = ["-h", inst.host, "-p", str(inst.port), "-U", inst.user]
        groups = {"writer": [inst.pid], "replica": [replica.pid], "nodes": [n.pid for n in fleet.nodes.values()]}
        say(f"  pgbench -i -I dtGvp -s {scale}")
        _pgbench([str(PGBENCH), *conn, "-i", "-I", "dtGvp", "-s", str(scale), "tidemark"],
                 120 + 120 * scale, env, work)
        runs = []
        for clients in client_counts:
            prefix = work / f"tidemark-{clients}"
            before = _bytes_received(fleet)
            with LagSampler(replica.admin_url) as lag, CpuMeter(groups) as cpu:
                out = _pgbench([str(PGBENCH), *conn, *_tpcb_args(clients, seconds, prefix), "tidemark"],
                               seconds + 120, env, work)
            run = parse_pgbench(out, clients, prefix)
            run.lag = lag.summary()
            run.cpu_ms_per_txn = cpu.per_txn_ms(run.processed)
            shipped = _bytes_received(fleet) - before
            if run.processed:
                run.shipped_per_txn = shipped / run.processed
                run.bytes_per_txn = run.shipped_per_txn / COPIES
            _say_run(say, f"{clients} client(s)", run, f", redo {run.bytes_per_txn or 0:.0f} B/txn per copy, "
                     f"r1 lag p50 {run.lag['replica_lag_p50_ms']} ms p99 {run.lag['replica_lag_p99_ms']} ms")
            runs.append(run)
        clients = client_counts[-1]
        prefix = work / f"tidemark-select-{clients}"
        replica_conn = ["-h", replica.host, "-p", str(replica.port), "-U", replica.user]
        out = _pgbench([str(PGBENCH), *replica_conn, *_tpcb_args(clients, seconds, prefix, select_only=True),
                        "tidemark"], seconds + 120, env, work)
        read = parse_pgbench(out, clients, prefix)
        _say_run(say, f"select-only on r1, {clients} client(s)", read)
        return runs, read
    finally:
        fleet.down()


def bench_postgres(client_counts: list[int], seconds: float, scale: int,
                   say: Callable[[str], None]) -> tuple[list[Run], Run]:
    """The TPC-B runs on the primary, then select-only on the standby s1."""
    say("[bold]postgres[/bold] 15: primary + 5 streaming standbys on 127.0.0.1, "
        "synchronous_standby_names = 'ANY 3 (s1..s5)', synchronous_commit = on")
    with PgQuorum(say) as pg:
        pg.start()
        say(f"  pgbench -i -I dtGvp -s {scale}")
        pg.run("pgbench", *pg.pgbench_args(), "-i", "-I", "dtGvp", "-s", str(scale), "postgres",
               timeout=120 + 120 * scale)
        runs = []
        for clients in client_counts:
            prefix = pg.dir / f"postgres-{clients}"
            lsn = pg.wal_lsn()
            primary, *standbys = pg.postmasters()
            with CpuMeter({"primary": [primary], "standbys": standbys}) as cpu:
                out = pg.run("pgbench", *pg.pgbench_args(), *_tpcb_args(clients, seconds, prefix), "postgres",
                             timeout=seconds + 120)
            run = parse_pgbench(out.stdout + out.stderr, clients, prefix)
            run.cpu_ms_per_txn = cpu.per_txn_ms(run.processed)
            wal = pg.wal_bytes_since(lsn)
            if run.processed:
                run.bytes_per_txn = wal / run.processed
            _say_run(say, f"{clients} client(s)", run, f", WAL {run.bytes_per_txn or 0:.0f} B/txn")
            runs.append(run)
        clients = client_counts[-1]
        prefix = pg.dir / f"postgres-select-{clients}"
        name, _data, port = pg.nodes[1]
        out = pg.run("pgbench", *pg.pgbench_args(port), *_tpcb_args(clients, seconds, prefix, select_only=True),
                     "postgres", timeout=seconds + 120)
        read = parse_pgbench(out.stdout + out.stderr, clients, prefix)
        _say_run(say, f"select-only on {name}, {clients} client(s)", read)
        return runs, read


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


async def bench_sql(seconds: float, clients: int, scale: int, base_ip: str, say: Callable[[str], None]) -> dict:
    why = available()
    if why is not None:
        raise RuntimeError(f"the PostgreSQL baseline cannot run: {why}")
    client_counts = sorted({1, clients})
    load_before = os.getloadavg()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="tidemark-bench-sql-"))
    try:
        tm_runs, tm_read = await bench_tidemark(work, client_counts, seconds, scale, base_ip, say)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    pg_runs, pg_read = bench_postgres(client_counts, seconds, scale, say)
    tm, pg = tm_runs[-1], pg_runs[-1]  # the headline: N clients
    by_clients = {
        str(t.clients): {"tidemark": t.summary(), "postgres": p.summary(), "ratio": _ratio(t.tps, p.tps)}
        for t, p in zip(tm_runs, pg_runs, strict=True)
    }
    return {
        "benchmark": "sql",
        "seconds": seconds,
        "scale": scale,
        "clients": clients,
        "tidemark_tps": round(tm.tps, 1),
        "postgres_tps": round(pg.tps, 1),
        "ratio": _ratio(tm.tps, pg.tps),
        "tidemark_latency_avg_ms": round(tm.latency_avg_ms, 3),
        "postgres_latency_avg_ms": round(pg.latency_avg_ms, 3),
        "tidemark_p50_ms": tm.percentile_ms(50),
        "tidemark_p99_ms": tm.percentile_ms(99),
        "postgres_p50_ms": pg.percentile_ms(50),
        "postgres_p99_ms": pg.percentile_ms(99),
        "tidemark_failed": tm.failed,
        "postgres_failed": pg.failed,
        "redo_bytes_per_txn": None if tm.bytes_per_txn is None else round(tm.bytes_per_txn, 1),
        "redo_bytes_shipped_per_txn": None if tm.shipped_per_txn is None else round(tm.shipped_per_txn, 1),
        "postgres_wal_bytes_per_txn": None if pg.bytes_per_txn is None else round(pg.bytes_per_txn, 1),
        "redo_to_wal_ratio": _ratio(tm.bytes_per_txn, pg.bytes_per_txn),
        # the servers' CPU per transaction (psutil, process trees), and the whole machine's
        "tidemark_cpu_ms_per_txn": tm.cpu_ms_per_txn,
        "postgres_cpu_ms_per_txn": pg.cpu_ms_per_txn,
        "by_clients": by_clients,
        "replica_read_tps": round(tm_read.tps, 1),  # pgbench -S on r1, N clients
        "postgres_standby_read_tps": round(pg_read.tps, 1),  # pgbench -S on the standby s1
        "replica_read_ratio": _ratio(tm_read.tps, pg_read.tps),
        "replica_read": {"tidemark": tm_read.summary(), "postgres": pg_read.summary(),
                         "ratio": _ratio(tm_read.tps, pg_read.tps)},
        # r1's lag_ms during the N-client TPC-B run (each run's: by_clients.N.tidemark)
        **(tm.lag or {}),
        "redo_counter": "storage nodes' tidemark_received_bytes_total (/metrics), summed, / transactions / 6 copies",
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "elapsed_s": round(time.monotonic() - started, 1),
    }
