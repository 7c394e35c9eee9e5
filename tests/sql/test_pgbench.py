"""pgbench against a writer instance of a playground fleet: the documented init
(`pgbench -i -I dtGvp`) and the builtin TPC-B script with zero failed transactions,
then the TPC-B invariant (sum of account balances == sum of history deltas) and
PRAGMA integrity_check.

Addresses: 127.0.237.x (no other suite uses them)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import apsw
import psycopg
import pytest

from tidemark_playground import fleet as fleet_mod
from tidemark_sql import catalog
from tidemark_sql.translate import prepare

pytestmark = [pytest.mark.sql, pytest.mark.timeout(240)]

PGBENCH = "/usr/lib/postgresql/15/bin/pgbench"


def pgbench(inst: fleet_mod.InstanceProc, password: str, *args: str, timeout: float = 120) -> str:
    env = {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"}
    result = subprocess.run([PGBENCH, "-h", inst.host, "-p", str(inst.port), "-U", inst.user, *args, "tidemark"],
                            capture_output=True, text=True, timeout=timeout, env=env)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    assert "error" not in out.lower(), out[-3000:]
    return out


@pytest.fixture
async def playground(tmp_path: Path):
    # 4 PGs x 4096 pages x 4 KiB = 64 MiB: scale 1 is ~15 MiB of SQLite pages
    fleet, _ = await fleet_mod.up(tmp_path / "fleet", 2, 4, 4096, 4096, "127.0.237.10", instances=1)
    try:
        yield fleet
    finally:
        fleet.down()


@pytest.mark.skipif(not os.path.exists(PGBENCH) and not os.environ.get("CI"), reason="PostgreSQL 15's pgbench is not installed")
async def test_pgbench_init_and_tpcb_with_zero_failures_keep_the_invariant(playground: fleet_mod.Fleet) -> None:
    (inst,) = playground.instances.values()
    password = Path(inst.password_file).read_text().strip().split(":", 1)[1]

    init = pgbench(inst, password, "-i", "-I", "dtGvp", "-s", "1")
    assert "done in" in init, init
    run = pgbench(inst, password, "-c", "2", "-j", "1", "-T", "5", "-n")
    assert re.search(r"number of failed transactions: 0 \(0\.000%\)", run), run
    processed = int(re.search(r"number of transactions actually processed: (\d+)", run).group(1))
    assert processed > 0, run

    dsn = f"host={inst.host} port={inst.port} user={inst.user} password={password} dbname=tidemark"
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        history = conn.execute("SELECT count(*), coalesce(sum(delta), 0) FROM pgbench_history").fetchone()
        assert history[0] == processed  # one history row per committed transaction
        accounts = conn.execute("SELECT count(*), sum(abalance) FROM pgbench_accounts").fetchone()
        assert accounts == (100_000, history[1])  # the TPC-B invariant
        for table in ("pgbench_tellers", "pgbench_branches"):
            col = "tbalance" if table == "pgbench_tellers" else "bbalance"
            assert conn.execute(f"SELECT sum({col}) FROM {table}").fetchone() == (history[1],)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # the rewrites behind the init, as a client sees them
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"pgbench_accounts_pkey", "pgbench_branches_pkey", "pgbench_tellers_pkey"} <= names
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0)")
        assert conn.execute("SELECT sum(x) FROM generate_series(1, 10) AS x").fetchone() == (55,)


def test_the_rewrites_pgbench_init_needs() -> None:
    split = "SAVEPOINT tidemark_split; {}; RELEASE tidemark_split"
    assert prepare("drop table if exists a, b") == split.format("DROP TABLE IF EXISTS a; DROP TABLE IF EXISTS b")
    assert prepare("drop table a") == "drop table a"
    assert prepare("truncate table a, b") == split.format("DELETE FROM a; DELETE FROM b")
    assert prepare("TRUNCATE pgbench_history") == "DELETE FROM pgbench_history"
    assert prepare("alter table pgbench_branches add primary key (bid)") == \
        'CREATE UNIQUE INDEX "pgbench_branches_pkey" ON pgbench_branches (bid)'
    assert prepare("ALTER TABLE t ADD CONSTRAINT k PRIMARY KEY (a, b)") == "CREATE UNIQUE INDEX k ON t (a, b)"
    assert prepare("vacuum analyze pgbench_branches") == "ANALYZE pgbench_branches"
    assert prepare("vacuum pgbench_branches") == ""  # no dead tuples in SQLite: nothing to do
    assert prepare("VACUUM") == "VACUUM" and prepare("VACUUM FULL") == "VACUUM"
    assert prepare("select aid from generate_series(1, 10) as aid") == \
        "select aid from (SELECT value AS aid FROM generate_series(1, 10)) AS aid"
    assert prepare("select * from generate_series(1, 3) g(x) where x > 1") == \
        "select * from (SELECT value AS x FROM generate_series(1, 3)) AS g where x > 1"
    assert prepare("select * from generate_series(1, 3) where value > 1") == \
        "select * from generate_series(1, 3) where value > 1"
    probe = ("select o.n, p.partstrat, pg_catalog.count(i.inhparent) from pg_catalog.pg_class as c join "
             "pg_catalog.pg_namespace as n on (n.oid = c.relnamespace) cross join lateral (select "
             "pg_catalog.array_position(pg_catalog.current_schemas(true), n.nspname)) as o(n) left join "
             "pg_catalog.pg_partitioned_table as p on (p.partrelid = c.oid) left join pg_catalog.pg_inherits as i "
             "on (c.oid = i.inhparent) where c.relname = 'pgbench_accounts' and o.n is not null group by 1, 2 "
             "order by 1 asc limit 1")
    conn = apsw.Connection(":memory:")
    catalog.install(conn, lambda _name: None)
    assert conn.execute(prepare(probe)).fetchall() == []  # no table: pgbench says "-i first"
    conn.execute("CREATE TABLE pgbench_accounts (aid int)")
    assert conn.execute(prepare(probe)).fetchall() == [(2, None, 0)]  # found in public, not partitioned
    assert conn.execute("SELECT * FROM generate_series(1, 7, 3)").fetchall() == [(1,), (4,), (7,)]
    assert conn.execute("SELECT * FROM generate_series(3, 1, -1)").fetchall() == [(3,), (2,), (1,)]
    assert conn.execute("SELECT * FROM generate_series(1, NULL)").fetchall() == []
