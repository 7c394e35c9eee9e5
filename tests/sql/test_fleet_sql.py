"""The SQL tier on a real fleet: psycopg through the writer instance, a bank
invariant through a storage-node SIGKILL, and an instance restart."""

from __future__ import annotations

import asyncio
import random
import sys
import time

import psycopg
import pytest
from conftest import PASSWORD, USER, dsn_of, start_instance

from tidemark_compute.topology import load_topology
from tidemark_playground import fleet as fleet_mod

pytestmark = [pytest.mark.sql, pytest.mark.timeout(240)]

ACCOUNTS, START = 20, 1000


async def _connect(instance) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn_of(instance), autocommit=True)


@pytest.mark.parametrize("multi_range", [True, False], ids=["multi-range", "single-range"])
async def test_crud_rollback_spill_ddl_then_restart_keeps_everything(fleet, host, multi_range: bool) -> None:
    instance = await start_instance(fleet, host, cache_size=5, multi_range=multi_range)
    try:
        async with await _connect(instance) as conn:
            await conn.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v INTEGER UNIQUE, pad TEXT)")
            await conn.execute("CREATE INDEX kv_pad ON kv (pad)")
            for k in range(1, 6):
                await conn.execute("INSERT INTO kv VALUES (%s, %s, 'p')", (k, k))
            await conn.execute("CREATE TABLE gone (x)")
            await conn.execute("DROP TABLE gone")
            await conn.set_autocommit(False)
            await conn.execute("DELETE FROM kv")
            await conn.rollback()
            with pytest.raises(psycopg.errors.UniqueViolation):
                await conn.execute("UPDATE kv SET v = v + 1")  # half-way: v=2 exists
            await conn.rollback()
            async with conn.transaction():  # larger than the 5-page cache
                await conn.cursor().executemany("INSERT INTO kv VALUES (%s, %s, %s)",
                                                [(k, k, "x" * 400) for k in range(100, 400)])
            cur = await conn.execute("SELECT count(*), sum(v) FROM kv")
            assert await cur.fetchone() == (305, 15 + sum(range(100, 400)))
            await conn.commit()
        stats = instance.engine.store
        pages = stats.pages
        assert pages > 20
    finally:
        await instance.close()
    instance = await start_instance(fleet, host, multi_range=multi_range)  # new Writer.open: recovery + seal
    try:
        async with await _connect(instance) as conn:
            cur = await conn.execute("SELECT count(*), sum(v) FROM kv")
            assert await cur.fetchone() == (305, 15 + sum(range(100, 400)))
            cur = await conn.execute("PRAGMA integrity_check")
            assert await cur.fetchone() == ("ok",)
            cur = await conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            assert await cur.fetchall() == [("kv",)]
        assert instance.engine.store.pages == pages
    finally:
        await instance.close()


async def _transfers(instance, client: int, until: float, acked: list[str], errors: list[str]) -> None:
    rng = random.Random(client)
    conn = await psycopg.AsyncConnection.connect(dsn_of(instance))
    try:
        n = 0
        while time.monotonic() < until:
            src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount = rng.randrange(1, 50)
            tid = f"c{client}-{n}"
            n += 1
            try:
                async with conn.transaction():
                    await conn.execute("UPDATE acc SET bal = bal - %s WHERE id = %s", (amount, src))
                    await conn.execute("UPDATE acc SET bal = bal + %s WHERE id = %s", (amount, dst))
                    await conn.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, src, dst, amount))
                acked.append(tid)
            except psycopg.Error as exc:
                errors.append(f"{tid}: {exc.sqlstate} {exc}")
    finally:
        await conn.close()


async def _check_bank(instance, acked: list[str]) -> None:
    async with await _connect(instance) as conn:
        cur = await conn.execute("SELECT sum(bal), count(*) FROM acc")
        assert await cur.fetchone() == (ACCOUNTS * START, ACCOUNTS)
        cur = await conn.execute("SELECT id FROM transfers")
        present = {row[0] for row in await cur.fetchall()}
        missing = [t for t in acked if t not in present]
        assert not missing, f"{len(missing)} acknowledged transfers lost: {missing[:5]}"
        cur = await conn.execute("PRAGMA integrity_check")
        assert await cur.fetchone() == ("ok",)


async def test_bank_invariant_with_four_clients_through_a_node_kill_and_restart(fleet, host) -> None:
    instance = await start_instance(fleet, host)
    acked: list[str] = []
    errors: list[str] = []
    try:
        async with await _connect(instance) as conn:
            await conn.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, bal BIGINT NOT NULL)")
            await conn.execute("CREATE TABLE transfers (id TEXT PRIMARY KEY, src INT, dst INT, amount INT)")
            await conn.cursor().executemany("INSERT INTO acc VALUES (%s, %s)",
                                            [(i, START) for i in range(1, ACCOUNTS + 1)])
        until = time.monotonic() + 7.0
        clients = [asyncio.create_task(_transfers(instance, c, until, acked, errors)) for c in range(4)]
        await asyncio.sleep(2.0)
        before_kill = len(acked)
        fleet.kill("a1")
        await asyncio.sleep(2.0)
        during = len(acked) - before_kill
        fleet.spawn(fleet.nodes["a1"])
        await fleet_mod.wait_ready([fleet.nodes["a1"]])
        await asyncio.wait_for(asyncio.gather(*clients), 60)
        assert not errors, errors[:5]
        assert before_kill > 0 and during > 0, "transfers must go on with 5 of 6 segments"
        await _check_bank(instance, acked)
    finally:
        await instance.close()
    instance = await start_instance(fleet, host)
    try:
        await _check_bank(instance, acked)
    finally:
        await instance.close()
    print(f"acknowledged transfers: {len(acked)}")
    for name in fleet.nodes:  # the nodes' materializer decodes the multi-range redo
        log = fleet.log_file(name).read_text(errors="replace")
        assert "corrupt_record" not in log and "materialize_error" not in log, name


async def test_a_fenced_writer_instance_answers_no_commit_and_loses_nothing(fleet, host) -> None:
    old = await start_instance(fleet, host)
    try:
        async with await _connect(old) as conn:
            await conn.execute("CREATE TABLE f (v TEXT PRIMARY KEY)")
            await conn.execute("INSERT INTO f VALUES ('before')")
            new = await start_instance(fleet, host)  # Writer.open seals a newer epoch
            try:
                with pytest.raises(psycopg.Error) as caught:
                    await asyncio.wait_for(conn.execute("INSERT INTO f VALUES ('stale')"), 20)
                assert caught.value.sqlstate == "57P01", caught.value
                async with await _connect(new) as fresh:
                    cur = await fresh.execute("SELECT v FROM f ORDER BY v")
                    assert await cur.fetchall() == [("before",)]
                    await fresh.execute("INSERT INTO f VALUES ('after')")
            finally:
                await new.close()
        with pytest.raises(psycopg.OperationalError):
            await _connect(old)  # refused: 57P01
    finally:
        await old.close()


async def test_a_second_writer_for_a_served_address_exits_before_it_fences_the_live_one(fleet, host, tmp_path) -> None:
    live = await start_instance(fleet, host)
    try:
        listen_host, port = live.address  # type: ignore[misc]
        epoch = load_topology(fleet.dir).volume_epoch
        password = tmp_path / "password"
        password.write_text(f"{USER}:{PASSWORD}\n")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tidemark_cli.main", "sql", "serve", "--dir", str(fleet.dir),
            "--listen", f"{listen_host}:{port}", "--password-file", str(password),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # the loop serves `live` meanwhile
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        lines = [line for line in err.decode().splitlines() if line.strip()]
        assert proc.returncode == 1 and len(lines) == 1 and "is in use" in lines[0], (out, err)
        assert load_topology(fleet.dir).volume_epoch == epoch  # it never opened the volume
        async with await _connect(live) as conn:  # and the live writer still commits
            await conn.execute("CREATE TABLE still (v INT)")
            await conn.execute("INSERT INTO still VALUES (1)")
    finally:
        await live.close()
