"""The PostgreSQL endpoint over a fake writer: psycopg (extended protocol), psql
(simple), SQLSTATEs, and hostile input that must never take the server down."""

from __future__ import annotations

import asyncio
import os
import struct
import subprocess

import psycopg
import pytest
from conftest import PASSWORD, USER, dsn_of
from pgraw import RawClient, error_code, logged_in
from pygwire.messages import ErrorResponse, Query, ReadyForQuery

from tidemark_protocol.errors import StaleEpoch

pytestmark = [pytest.mark.sql, pytest.mark.timeout(60)]


async def _connect(instance, **kw) -> psycopg.AsyncConnection:
    return await psycopg.AsyncConnection.connect(dsn_of(instance, **kw), autocommit=True)


async def test_crud_types_rollback_and_ddl(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE acc (id SERIAL PRIMARY KEY, name VARCHAR(20) UNIQUE, bal BIGINT, "
                           "ok BOOLEAN, r REAL, b BYTEA)")
        await conn.execute("CREATE INDEX acc_bal ON acc (bal)")
        for name, bal in (("a", 10), ("b", 20)):
            await conn.execute("INSERT INTO acc (name, bal, ok, r, b) VALUES (%s, %s, %s, %s, %s)",
                               (name, bal, True, 1.5, b"\x00\x01"))
        cur = await conn.execute("SELECT id, name, bal, ok, r, b FROM acc ORDER BY id")
        assert await cur.fetchall() == [(1, "a", 10, True, 1.5, b"\x00\x01"), (2, "b", 20, True, 1.5, b"\x00\x01")]
        cur = await conn.execute("SELECT name FROM acc WHERE bal > %s AND name ILIKE %s", (5, "A"))
        assert await cur.fetchall() == [("a",)], "ILIKE is translated by sqlglot"
        cur = await conn.execute("INSERT INTO acc (name, bal) VALUES ('c', 1) RETURNING id")
        assert await cur.fetchone() == (3,)
        assert cur.statusmessage == "INSERT 0 1"
        await conn.set_autocommit(False)
        await conn.execute("UPDATE acc SET bal = 0")
        await conn.rollback()
        cur = await conn.execute("SELECT sum(bal) FROM acc")
        assert await cur.fetchone() == (31,)
        await conn.rollback()
        await conn.set_autocommit(True)
        await conn.execute("DROP INDEX acc_bal")
        await conn.execute("DROP TABLE acc")
        with pytest.raises(psycopg.errors.UndefinedTable):
            await conn.execute("SELECT * FROM acc")


async def test_statement_failing_half_way_leaves_the_earlier_state(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY, v INTEGER UNIQUE)")
        await conn.execute("INSERT INTO u (v) VALUES (1), (2), (3)")
        await conn.set_autocommit(False)
        await conn.execute("INSERT INTO u (v) VALUES (10)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute("UPDATE u SET v = v + 1")  # collides at v=2 after changing v=1
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            await conn.execute("SELECT 1")
        await conn.rollback()
        cur = await conn.execute("SELECT v FROM u ORDER BY v")
        assert await cur.fetchall() == [(1,), (2,), (3,)]
        await conn.rollback()
        await conn.set_autocommit(True)
        with pytest.raises(psycopg.errors.UniqueViolation):
            await conn.execute("UPDATE u SET v = v + 1")  # autocommit: the statement alone is undone
        cur = await conn.execute("SELECT v FROM u ORDER BY v")
        assert await cur.fetchall() == [(1,), (2,), (3,)]


async def test_bad_sql_is_42601_and_the_connection_keeps_serving(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        for _ in range(2):
            with pytest.raises(psycopg.errors.SyntaxError):
                await conn.execute("SELEC 1 FROM")
            cur = await conn.execute("SELECT 1 + 1")
            assert await cur.fetchone() == (2,)
        cur = await conn.execute("SELECT version()")
        assert "Tidemark" in (await cur.fetchone())[0]
        cur = await conn.execute("SHOW server_version")
        assert await cur.fetchone() == ("15.0",)
        await conn.execute("SET application_name = 'bank'")
        cur = await conn.execute("SELECT current_setting('application_name')")
        assert await cur.fetchone() == ("bank",)


async def test_read_only_transaction_refuses_writes_25006(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE r (v)")
        await conn.execute("BEGIN READ ONLY")
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            await conn.execute("INSERT INTO r VALUES (1)")
        await conn.execute("ROLLBACK")
        await conn.execute("INSERT INTO r VALUES (1)")


async def test_wrong_password_is_28p01_and_right_one_works(fake_instance) -> None:
    host, port = fake_instance.address
    for password, ok in (("wrong", False), (PASSWORD, True)):
        client = await RawClient.connect(host, port)
        try:
            messages = await client.login(USER, password)
        finally:
            client.close()
        assert logged_in(messages) is ok
        if not ok:
            assert error_code(messages) == "28P01"
    client = await RawClient.connect(host, port)
    try:
        assert error_code(await client.login("nobody", PASSWORD)) == "28P01"
    finally:
        client.close()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        await _connect(fake_instance, password="nope")


async def test_malformed_oversized_and_too_many_connections(fake_instance) -> None:
    host, port = fake_instance.address
    # oversized query: 54000, the session goes on
    client = await RawClient.connect(host, port)
    assert logged_in(await client.login(USER, PASSWORD))
    await client.send(Query(query_string="SELECT '" + "x" * 100_000 + "'").to_wire())
    messages = await client.until((ReadyForQuery,))
    assert error_code(messages) == "54000"
    await client.send(Query(query_string="SELECT 42").to_wire())
    assert error_code(await client.until((ReadyForQuery,))) is None
    # malformed: a Bind whose counts lie, then garbage with an unknown type byte
    await client.send(b"B" + struct.pack("!I", 8) + b"\0\0\xff\xff")
    messages = await client.until((ErrorResponse,))
    assert error_code(messages) == "08P01"
    client.close()
    client = await RawClient.connect(host, port)
    await client.send(b"\0\0\0\x08\xde\xad\xbe\xef")  # unknown startup code
    assert error_code(await client.until((ErrorResponse,))) == "08P01"
    client.close()
    # too many: the fixture allows 8
    conns = [await _connect(fake_instance) for _ in range(8)]
    try:
        client = await RawClient.connect(host, port)
        assert error_code(await client.login(USER, PASSWORD)) == "53300"
        client.close()
    finally:
        for conn in conns:
            await conn.close()
    async with await _connect(fake_instance) as conn:  # the server still serves
        cur = await conn.execute("SELECT 1")
        assert await cur.fetchone() == (1,)


async def test_fenced_writer_errors_clients_and_accepts_nothing(fake_instance) -> None:
    conn = await _connect(fake_instance)
    await conn.execute("CREATE TABLE f (v)")
    fake_instance.writer.fence(StaleEpoch("a newer writer sealed the volume"))
    await asyncio.sleep(0.3)
    with pytest.raises(psycopg.errors.AdminShutdown):
        await conn.execute("INSERT INTO f VALUES (1)")
    await conn.close()
    client = await RawClient.connect(*fake_instance.address)
    assert error_code(await client.login(USER, PASSWORD)) == "57P01"
    client.close()


async def test_psql_runs_a_query(fake_instance) -> None:
    host, port = fake_instance.address
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    cmd = ["/usr/bin/psql", "-h", host, "-p", str(port), "-U", USER, "-d", "tidemark", "-X", "-A", "-t",
           "-v", "ON_ERROR_STOP=1", "-c", "CREATE TABLE p (v TEXT)", "-c", "INSERT INTO p VALUES ('hello')",
           "-c", "SELECT v || ' psql' FROM p"]
    proc = await asyncio.create_subprocess_exec(*cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    assert "hello psql" in out.decode()


async def test_disconnect_mid_transaction_rolls_back_and_frees_the_database(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE d (v INTEGER)")
        await conn.execute("INSERT INTO d VALUES (1)")
    holder = await _connect(fake_instance)
    await holder.execute("BEGIN")
    await holder.execute("UPDATE d SET v = 99")
    async with await _connect(fake_instance) as other:
        with pytest.raises(psycopg.errors.SerializationFailure):  # the holder keeps its turn > 1 s
            await other.execute("SELECT v FROM d")
        holder.pgconn.finish()  # the client vanishes mid-transaction
        await asyncio.sleep(0.3)
        cur = await other.execute("SELECT v FROM d")
        assert await cur.fetchall() == [(1,)]


async def test_idle_in_transaction_session_is_terminated_and_rolled_back(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE i (v INTEGER)")
        idle = await _connect(fake_instance)
        await idle.execute("BEGIN")
        await idle.execute("INSERT INTO i VALUES (1)")
        await asyncio.sleep(2.5)  # the fixture's idle-in-transaction timeout is 2 s
        cur = await conn.execute("SELECT count(*) FROM i")
        assert await cur.fetchone() == (0,)
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            await idle.execute("COMMIT")
        await idle.close()


async def test_prepared_statements_and_many_parameters(fake_instance) -> None:
    async with await _connect(fake_instance) as conn:
        await conn.execute("CREATE TABLE w (a INTEGER, b TEXT, c REAL)")
        for i in range(8):  # psycopg prepares (named Parse) after a few runs
            await conn.execute("INSERT INTO w VALUES (%s, %s, %s)", (i, f"s{i}", i / 2), prepare=True)
        cur = await conn.execute("SELECT a, b, c FROM w WHERE a >= %s AND b <> %s ORDER BY a", (6, "x"),
                                 prepare=True)
        assert await cur.fetchall() == [(6, "s6", 3.0), (7, "s7", 3.5)]
        cur = await conn.execute("SELECT count(*) FROM w WHERE b IS NULL OR a = %s", (None,))
        assert await cur.fetchone() == (0,)


async def test_niladic_functions_answer_like_postgresql(fake_instance) -> None:
    """current_user and friends are written without parentheses (they were read as
    columns: 'no such column: current_user')."""
    async with await _connect(fake_instance) as conn:
        cur = await conn.execute("SELECT current_user, session_user, current_schema, current_catalog, "
                                 "'current_user'")
        assert await cur.fetchone() == (USER, USER, "public", "tidemark", "current_user")


async def test_several_statements_in_one_query_are_one_implicit_transaction(fake_instance) -> None:
    """As in PostgreSQL: a failing statement of a multi-statement Query undoes the ones
    before it (it used to store them: `INSERT …; SELEC` kept the INSERT)."""
    async with await _connect(fake_instance) as conn:  # no parameters: psycopg sends a simple Query
        await conn.execute("CREATE TABLE m (k INTEGER PRIMARY KEY); INSERT INTO m VALUES (1)")
        for bad in ("INSERT INTO m VALUES (2); SELEC", "INSERT INTO m VALUES (3); INSERT INTO m VALUES (1)"):
            with pytest.raises(psycopg.Error):
                await conn.execute(bad)
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        await conn.execute("INSERT INTO m VALUES (4); INSERT INTO m VALUES (6)")  # all well: committed
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(psycopg.errors.UniqueViolation):  # own transaction control: statement by statement
            await conn.execute("BEGIN; INSERT INTO m VALUES (5); COMMIT; INSERT INTO m VALUES (1)")
        cur = await conn.execute("SELECT k FROM m ORDER BY k")
        assert await cur.fetchall() == [(1,), (4,), (5,), (6,)]
