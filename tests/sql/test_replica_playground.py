"""A writer and a read replica in the playground, through the CLI as a user runs them:
`playground up` (default: w1 + r1), `status --json` instances, `kill/pause/resume/
restart r1`, the writer lease against a resumed stale writer, and failover: SIGKILL w1
under a bank workload, the supervisor starts a new writer, writes resume, every
acknowledged transfer is there, the replica's totals never break.

Addresses: 127.0.0.210-217 and 127.0.0.220-227 (one fleet each)."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import tm
from test_playground_sql import connect, status

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.writer import Writer
from tidemark_playground.fleet import Fleet
from tidemark_sql.lease import WriterLease

pytestmark = [pytest.mark.sql, pytest.mark.timeout(300)]


def instances(directory: Path) -> dict[str, dict]:
    return {i["name"]: i for i in status(directory)["instances"]}


def wait_for(check, timeout: float = 15.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except psycopg.Error:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def test_up_starts_a_writer_and_a_replica_which_survives_kill_pause_restart(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.0.210", "--no-repair", "--json")
    assert up.returncode == 0, up.stderr[-2000:]
    found = instances(playground_dir)
    assert set(found) == {"w1", "r1"}
    w1, r1 = found["w1"], found["r1"]
    assert (w1["role"], r1["role"]) == ("writer", "replica")
    assert w1["alive"] and r1["alive"] and w1["lag_ms"] == 0 and isinstance(r1["lag_ms"], int | float)
    assert r1["dsn"].startswith("postgresql://tidemark@127.0.0.21") and r1["dsn"] != w1["dsn"]
    epoch = load_topology(playground_dir).volume_epoch

    with connect(w1) as w:
        w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        w.execute("INSERT INTO t VALUES (1, 'one')")
        with connect(r1) as r:
            assert wait_for(lambda: r.execute("SELECT v FROM t WHERE k = 1").fetchall()) == [("one",)]
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                r.execute("INSERT INTO t VALUES (2, 'no')")

        assert tm("kill", "r1", "--dir", d).returncode == 0
        dead = instances(playground_dir)["r1"]
        assert dead["alive"] is False and dead["process"] == "dead" and dead["lag_ms"] is None
        w.execute("INSERT INTO t VALUES (2, 'two')")  # the writer does not need its replica
        assert tm("restart", "r1", "--dir", d).returncode == 0
        with connect(r1) as r:
            assert wait_for(lambda: r.execute("SELECT count(*) FROM t").fetchone() == (2,))

        assert tm("pause", "r1", "--dir", d).returncode == 0
        w.execute("INSERT INTO t VALUES (3, 'three')")
        assert tm("resume", "r1", "--dir", d).returncode == 0
        with connect(r1) as r:
            assert wait_for(lambda: r.execute("SELECT count(*) FROM t").fetchone() == (3,))
            assert r.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        w.execute("INSERT INTO t VALUES (4, 'four')")  # no replica start ever fenced the writer
    assert load_topology(playground_dir).volume_epoch == epoch  # replicas never sealed the volume
    again = instances(playground_dir)
    assert again["r1"]["alive"] and again["r1"]["lag_ms"] is not None and again["r1"]["lag_ms"] < 5000


async def test_a_stale_writer_resumed_after_a_newer_one_took_the_lease_answers_nothing(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.0.210", "--no-repair", "--instances", "1", "--json")
    assert up.returncode == 0, up.stderr[-2000:]
    w1 = instances(playground_dir)["w1"]
    with connect(w1) as w:
        w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        w.execute("INSERT INTO t VALUES (1)")
        assert tm("pause", "w1", "--dir", d).returncode == 0
        topology = load_topology(playground_dir)  # a newer writer opens the volume meanwhile
        other = await Writer.open(topology, timeout=30, membership_source=membership_source(playground_dir))
        record_volume_epoch(playground_dir, topology.volume_epoch)
        WriterLease(playground_dir, topology.volume_epoch).claim("ws://127.0.0.1:1/v1/feed")
        await other.close()
        assert tm("resume", "w1", "--dir", d).returncode == 0
        with pytest.raises(psycopg.errors.AdminShutdown):
            w.execute("SELECT k FROM t")  # even a read: it would be stale
    with pytest.raises(psycopg.OperationalError):
        connect(w1, timeout=3).close()  # refused at connect too (57P01)


ACCOUNTS, START = 300, 1000


def test_writer_sigkill_fails_over_within_10s_and_loses_no_acknowledged_transfer(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.0.220", "--json")  # the supervisor runs
    assert up.returncode == 0, up.stderr[-2000:]
    found = instances(playground_dir)
    w1, r1 = found["w1"], found["r1"]
    with connect(w1) as w:
        w.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL, pad TEXT)")
        w.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, amount INTEGER)")
        with w.transaction():
            w.cursor().executemany("INSERT INTO acc VALUES (%s, %s, %s)",
                                   [(i, START, "p" * 200) for i in range(1, ACCOUNTS + 1)])
    total = ACCOUNTS * START
    acked: list[tuple[float, str]] = []
    replica_sums: list[tuple[float, int]] = []
    errors: list[str] = []
    stop = threading.Event()

    def transfers(client: int) -> None:
        rng = random.Random(client)
        conn = None
        n = 0
        while not stop.is_set():
            try:
                if conn is None:
                    conn = connect(w1, timeout=2)
                tid = f"{client}-{n}"
                n += 1
                src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
                amount = rng.randint(1, 30)
                with conn.transaction():
                    conn.execute("UPDATE acc SET bal = bal - %s WHERE id = %s", (amount, src))
                    conn.execute("UPDATE acc SET bal = bal + %s WHERE id = %s", (amount, dst))
                    conn.execute("INSERT INTO transfers VALUES (%s, %s)", (tid, amount))
                acked.append((time.monotonic(), tid))  # COMMIT answered: it must survive
            except psycopg.Error:  # the writer died: outcome unknown, reconnect
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)
        if conn is not None:
            conn.close()

    def replica_reads() -> None:
        conn = None
        while not stop.is_set():
            try:
                if conn is None:
                    conn = connect(r1, timeout=2)
                got, rows = conn.execute("SELECT sum(bal), count(*) FROM acc").fetchone()
                replica_sums.append((time.monotonic(), got))
                if got != total or rows != ACCOUNTS:
                    errors.append(f"replica total {got} over {rows} accounts")
            except psycopg.Error as exc:
                errors.append(f"replica read failed: {exc!r}")
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.05)

    threads = [threading.Thread(target=transfers, args=(c,)) for c in range(2)]
    threads.append(threading.Thread(target=replica_reads))
    for thread in threads:
        thread.start()
    try:
        time.sleep(3.0)
        assert tm("kill", "w1", "--dir", d).returncode == 0
        killed = time.monotonic()
        resumed = wait_for(lambda: any(t > killed for t, _ in acked), timeout=20)
        failover = next((t for t, _ in acked if t > killed), None)
        time.sleep(2.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert resumed and failover is not None, "no write accepted after the writer was killed"
    failover_s = failover - killed
    during = [s for t, s in replica_sums if killed <= t <= failover]
    print(f"SIGKILL w1 -> first acknowledged transfer: {failover_s:.2f} s; acknowledged {len(acked)}; "
          f"replica sums {len(replica_sums)} ({len(during)} during the failover)")
    assert failover_s < 10, failover_s
    assert not errors, errors[:5]
    assert sum(1 for t, _ in acked if t < killed) > 10 and len(replica_sums) > 10
    ids = {tid for _, tid in acked}
    with connect(w1) as w:
        stored = {row[0] for row in w.execute("SELECT id FROM transfers").fetchall()}
        assert ids <= stored, f"lost acknowledged transfers: {sorted(ids - stored)[:5]}"
        assert w.execute("SELECT sum(bal), count(*) FROM acc").fetchone() == (total, ACCOUNTS)
        assert w.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        last = w.execute("SELECT count(*) FROM transfers").fetchone()[0]
    with connect(r1) as r:  # the replica follows the new writer
        assert wait_for(lambda: r.execute("SELECT count(*) FROM transfers").fetchone()[0] == last)
        assert r.execute("SELECT sum(bal) FROM acc").fetchone() == (total,)

    old_pid = Fleet.load(playground_dir).instances["r1"].pid
    assert tm("kill", "r1", "--dir", d).returncode == 0  # SIGKILL the replica: the supervisor restarts it
    assert wait_for(lambda: Fleet.load(playground_dir).instances["r1"].pid != old_pid, timeout=10)

    def replica_serves() -> bool:
        with connect(r1, timeout=2) as r:
            return r.execute("SELECT count(*) FROM transfers").fetchone()[0] == last
    assert wait_for(replica_serves, timeout=30)
