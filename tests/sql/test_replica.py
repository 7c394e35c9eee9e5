"""Read replicas over a real fleet, in one process with their writer instance: what the
writer commits (rows, DDL) shows on the replica; one read transaction sees one VDL; the
torn-read regression (a bank sum under a fast writer through psycopg); writes are
25006; the replica's read point is folded into the writer's PGMRPL; lag is exported.

Addresses: 127.0.0.200-209 (one fleet at a time)."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import aiohttp
import psycopg
import pytest
from conftest import PASSWORD, USER, dsn_of, open_writer, writer_and_replica

from tidemark_compute.reader import Reader
from tidemark_compute.topology import load_topology, membership_source
from tidemark_playground import fleet as fleet_mod
from tidemark_protocol.feed import feed_token
from tidemark_sql import telemetry
from tidemark_sql.instance import Instance
from tidemark_sql.scram import parse_credentials

pytestmark = [pytest.mark.sql, pytest.mark.timeout(240)]

WRITER_HOST, REPLICA_HOST = "127.0.0.206", "127.0.0.207"
ACCOUNTS, START = 1500, 1000  # padded rows: the table spans ~100 pages, so a torn read is possible


@pytest.fixture
async def pair(tmp_path: Path):
    """A storage fleet, a writer instance and a replica following its feed."""
    async with writer_and_replica(tmp_path / "fleet", 1024, "127.0.0.200", WRITER_HOST, REPLICA_HOST) as instances:
        yield instances


async def connect(instance) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn_of(instance), autocommit=True)


async def eventually(check, timeout: float = 10.0):
    """Poll an async check until it returns a truthy value (the replica trails by ms)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.02)


async def test_replica_sees_rows_and_ddl_and_one_transaction_sees_one_vdl(pair) -> None:
    writer, replica = pair
    async with await connect(writer) as w, await connect(replica) as r:
        await w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        await w.execute("CREATE INDEX t_v ON t (v)")
        await w.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")

        async def rows():
            try:
                return await (await r.execute("SELECT k, v FROM t ORDER BY k")).fetchall()
            except psycopg.errors.UndefinedTable:
                return None
        assert await eventually(rows) == [(1, "one"), (2, "two")]
        names = await (await r.execute("SELECT name FROM sqlite_master WHERE tbl_name = 't' ORDER BY name")).fetchall()
        assert ("t_v",) in names
        plan = await (await r.execute("EXPLAIN QUERY PLAN SELECT k FROM t WHERE v = 'two'")).fetchall()
        assert "t_v" in str(plan)  # the replica's schema has the index and uses it

        # One read transaction sees one VDL: the writer's commit shows only after it ends.
        await r.execute("BEGIN")
        assert await (await r.execute("SELECT count(*) FROM t")).fetchone() == (2,)
        await w.execute("INSERT INTO t VALUES (3, 'three')")
        await asyncio.sleep(0.3)  # the feed has delivered it by now
        assert replica.reader.vdl == writer.writer.vdl
        assert await (await r.execute("SELECT count(*) FROM t")).fetchone() == (2,)
        await r.execute("COMMIT")
        assert await (await r.execute("SELECT count(*) FROM t")).fetchone() == (3,)

        await w.execute("DROP INDEX t_v")
        await w.execute("CREATE TABLE u (x INT)")
        await w.execute("DROP TABLE t")

        async def schema():
            got = await (await r.execute("SELECT name FROM sqlite_master ORDER BY name")).fetchall()
            return got if got == [("u",)] else None
        assert await eventually(schema) == [("u",)]
        assert await (await r.execute("PRAGMA integrity_check")).fetchone() == ("ok",)


async def test_writes_on_a_replica_are_25006_and_change_nothing(pair) -> None:
    writer, replica = pair
    async with await connect(writer) as w, await connect(replica) as r:
        await w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        await w.execute("INSERT INTO t VALUES (1)")
        await eventually(lambda: _count(r, "t"))
        for statement in ("INSERT INTO t VALUES (2)", "UPDATE t SET k = 5", "DELETE FROM t",
                          "CREATE TABLE z (a INT)", "CREATE INDEX tk ON t (k)", "DROP TABLE t",
                          "PRAGMA query_only=0", "PRAGMA main.query_only = off"):
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await r.execute(statement)
        await r.execute("BEGIN READ ONLY")  # a READ ONLY transaction does not lift it when it ends
        await r.execute("COMMIT")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await r.execute("INSERT INTO t VALUES (3)")
        assert await (await r.execute("SELECT k FROM t")).fetchall() == [(1,)]  # the session goes on
        assert await (await w.execute("SELECT k FROM t")).fetchall() == [(1,)]
        await w.execute("INSERT INTO t VALUES (4)")  # the writer was never fenced by the replica
    assert writer.pipeline.failed is None and writer.writer.fenced is None


async def _count(conn: psycopg.AsyncConnection, table: str) -> int | None:
    try:
        return (await (await conn.execute(f"SELECT count(*) FROM {table}")).fetchone())[0]
    except psycopg.errors.UndefinedTable:
        return None


async def _row_one(conn: psycopg.AsyncConnection) -> bool:
    try:
        return bool(await (await conn.execute("SELECT bal FROM acc WHERE id = 1")).fetchall())
    except psycopg.errors.UndefinedTable:
        return False


async def test_torn_read_regression_bank_sum_on_a_replica_under_a_fast_writer(pair) -> None:
    """Without the header fix (bytes 24-27/92-95 from the read point) the replica's SQLite
    keeps stale cached pages next to new ones and sums to totals no state had."""
    writer, replica = pair
    async with await connect(writer) as w:
        await w.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL, pad TEXT)")
        async with w.transaction():
            await w.cursor().executemany("INSERT INTO acc VALUES (%s, %s, %s)",
                                         [(i, START, "x" * 200) for i in range(1, ACCOUNTS + 1)])
    total = ACCOUNTS * START
    transfers = 0
    sums: list[int] = []
    stop = asyncio.Event()

    async def transfer(seed: int) -> None:
        nonlocal transfers
        rng = random.Random(seed)
        async with await connect(writer) as conn:
            while not stop.is_set():
                src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)  # far apart: different pages
                amount = rng.randint(1, 50)
                async with conn.transaction():
                    await conn.execute("UPDATE acc SET bal = bal - %s WHERE id = %s", (amount, src))
                    await conn.execute("UPDATE acc SET bal = bal + %s WHERE id = %s", (amount, dst))
                transfers += 1

    async def read() -> None:
        rng = random.Random(7)
        async with await connect(replica) as conn:
            await eventually(lambda: _row_one(conn))  # not a scan: that would load every page at once
            # First only small ranges, for 2 s: each brings a few pages into SQLite's
            # cache at a different read point. A replica whose SQLite kept its cache
            # across read points then sums pages of many ages: totals no state had.
            warm_until = time.monotonic() + 2.0
            while time.monotonic() < warm_until:
                low = rng.randint(1, ACCOUNTS)
                await conn.execute("SELECT sum(bal) FROM acc WHERE id BETWEEN %s AND %s", (low, low + 20))
            while not stop.is_set():
                row = await (await conn.execute("SELECT sum(bal), count(*) FROM acc")).fetchone()
                sums.append(row[0] if row[1] == ACCOUNTS else -row[1])
                low = rng.randint(1, ACCOUNTS)
                await conn.execute("SELECT sum(bal) FROM acc WHERE id BETWEEN %s AND %s", (low, low + 20))

    moves_before = replica.store.moves
    tasks = [asyncio.create_task(transfer(s)) for s in range(2)] + [asyncio.create_task(read())]
    # 8 s, then on (bounded) until there is enough to judge: a loaded machine (load 30 in a
    # CI-style run beside a kind cluster) made too few transfers in 8 s
    started = time.monotonic()
    await asyncio.sleep(8.0)
    while (transfers <= 50 or len(sums) <= 20 or replica.store.moves - moves_before <= 10) \
            and time.monotonic() - started < 60:
        await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 60)
    wrong = [s for s in sums if s != total]
    print(f"replica sums: {len(sums)}, transfers: {transfers}, read point moves: "
          f"{replica.store.moves - moves_before}, storage page reads: {replica.store.page_reads}")
    assert transfers > 50 and len(sums) > 20, (transfers, len(sums))
    assert replica.store.moves - moves_before > 10  # the read point did move under the reads
    assert not wrong, f"{len(wrong)} of {len(sums)} replica sums were not {total}: {wrong[:5]}"
    async with await connect(writer) as w, await connect(replica) as r:  # and not merely stale
        final = await (await w.execute("SELECT id, bal FROM acc ORDER BY id")).fetchall()

        async def caught_up():
            return await (await r.execute("SELECT id, bal FROM acc ORDER BY id")).fetchall() == final
        assert await eventually(caught_up), "the replica never showed the writer's last state"


async def test_replica_read_point_is_folded_into_pgmrpl_and_lag_is_exported(pair) -> None:
    writer, replica = pair
    w_core = writer.writer
    async with await connect(writer) as w, await connect(replica) as r:
        await w.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        await w.execute("INSERT INTO t VALUES (1)")
        await eventually(lambda: _count(r, "t"))
        await r.execute("BEGIN")
        await r.execute("SELECT count(*) FROM t")
        held = replica.store.read_point
        for k in range(2, 12):
            await w.execute("INSERT INTO t VALUES (%s)", (k,))
        assert w_core.vdl > held
        assert w_core.pgmrpl() == held  # nodes keep what the open replica transaction reads
        await r.execute("COMMIT")
        await w.execute("INSERT INTO t VALUES (50)")  # the replica stays idle: it must not hold GC back

        async def released():
            return w_core.pgmrpl() == w_core.vdl > held
        assert await eventually(released)
    status = replica.status()
    assert status["role"] == "replica" and status["feed_connected"] and 0 <= status["lag_ms"] < 5000
    telemetry.setup("replica", lambda: replica.reader.lag_ms)  # as `tidemark sql serve` does
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{replica.admin.url}/v1/status") as resp:
            assert (await resp.json())["read_point"] == replica.store.read_point
        async with session.get(f"{replica.admin.url}/metrics") as resp:
            text = await resp.text()
    assert "tidemark_replica_lag_current_milliseconds" in text, text[:2000]


async def test_a_feed_with_a_token_serves_only_replicas_that_present_it(tmp_path: Path) -> None:
    """Off loopback (replica pods) the feed is guarded by a token derived from the
    instances' shared secret: no token or a wrong one is refused (401), the right one
    follows; the secret itself is never sent."""
    fl, _topology = await fleet_mod.up(tmp_path / "fleet", 2, 4, 1024, 4096, "127.0.0.200", gossip_interval=0.3)
    creds = parse_credentials(f"{USER}:{PASSWORD}")
    writer = None
    token = feed_token("shared secret")
    try:
        writer = await Instance.start(await open_writer(fl), WRITER_HOST, 0, creds, admin_port=0,
                                      feed_token=token)
        feed = f"ws{writer.admin.url[4:]}/v1/feed"
        async with aiohttp.ClientSession() as session:
            for headers in ({}, {"Authorization": f"Bearer {feed_token('another secret')}"},
                            {"Authorization": "Bearer shared secret"}):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(feed, headers=headers)
                assert refused.value.status == 401
        reader = Reader(load_topology(fl.dir), lambda: feed, membership_source(fl.dir), feed_token=token)
        await reader.start(timeout=30)
        assert reader.connected and reader.vdl >= 0
        assert writer.feed.replicas == 1
        await reader.close()
    finally:
        if writer is not None:
            await writer.close()
        fl.down()
