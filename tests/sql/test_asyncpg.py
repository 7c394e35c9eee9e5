"""asyncpg against Tidemark instances: SCRAM, the extended protocol with binary formats
(asyncpg prepares every parameterised statement, asks for its parameter and column
types, then encodes and decodes by them), transactions, prepared statements reused,
executemany, cursors, a pool, NULLs and the common types, and errors as asyncpg's
exception classes with their SQLSTATE. A fake writer for the protocol; a real fleet,
writer and replica for the replica's 25006.

Addresses: fake-writer instances on 127.0.170.x, the fleet on 127.0.171.10-15, its
writer 127.0.171.20, its replica 127.0.171.21."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from conftest import PASSWORD, USER, writer_and_replica
from sqlfakes import FakeWriter

from tidemark_sql import pgtypes
from tidemark_sql.infer import infer
from tidemark_sql.instance import Instance
from tidemark_sql.scram import parse_credentials

pytestmark = [pytest.mark.sql, pytest.mark.timeout(120)]

_hosts = itertools.count(2)
FLEET_BASE, WRITER_HOST, REPLICA_HOST = "127.0.171.10", "127.0.171.20", "127.0.171.21"


@pytest.fixture
async def instance():
    writer = FakeWriter()
    inst = await Instance.start(writer, f"127.0.170.{next(_hosts) % 250 + 2}", 0,
                                parse_credentials(f"{USER}:{PASSWORD}"), max_connections=8, lock_timeout=1.0)
    try:
        yield inst
    finally:
        await inst.close()


async def connect(inst, password: str = PASSWORD) -> asyncpg.Connection:
    host, port = inst.address
    return await asyncpg.connect(host=host, port=port, user=USER, password=password, database="tidemark",
                                 timeout=10)


async def test_types_parameters_and_nulls_round_trip_in_binary(instance) -> None:
    conn = await connect(instance)  # SCRAM-SHA-256
    try:
        await conn.execute("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, i INT, big BIGINT, s TEXT, v VARCHAR(10), "
                           "b BYTEA, f DOUBLE PRECISION, ok BOOLEAN, ts TIMESTAMP, tz TIMESTAMPTZ, d DATE, "
                           "n NUMERIC)")
        row = (7, 2**40, "tidemark", "vc", b"\x00\xff\x01", 1.25, True, datetime(2024, 1, 2, 3, 4, 5, 678000),
               datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC), date(2024, 5, 6), Decimal("12.345"))
        insert = "INSERT INTO t (i, big, s, v, b, f, ok, ts, tz, d, n) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        assert await conn.execute(insert, *row) == "INSERT 0 1"
        assert await conn.execute(insert, *([None] * 11)) == "INSERT 0 1"
        rows = await conn.fetch("SELECT i, big, s, v, b, f, ok, ts, tz, d, n FROM t ORDER BY id")
        assert tuple(rows[0]) == row
        assert tuple(rows[1]) == (None,) * 11
        got = await conn.fetchrow("SELECT id, s FROM t WHERE big = $1 AND ok = $2 AND ts < $3", 2**40, True,
                                  datetime(2025, 1, 1))
        assert (got["id"], got["s"]) == (1, "tidemark")
        assert await conn.fetchval("SELECT s FROM t WHERE id = $1", 2) is None
        assert await conn.fetchval("SELECT count(*) FROM t WHERE s IS NULL") == 1
        # expressions take PostgreSQL's types, not text: count, arithmetic, comparisons, casts
        assert await conn.fetchrow("SELECT 1, count(*), sum(i), avg(f), i * 2, i = 7, $1::int + 1 FROM t", 4) \
            == (1, 2, 7, 1.25, 14, True, 5)
        assert await conn.fetchval("SELECT $1::bytea", b"\x01") == b"\x01"
        assert await conn.fetchval("SELECT $1::json", '{"a": 1}') == '{"a": 1}'
        assert isinstance(await conn.fetchval("SELECT now()"), datetime)
        assert await conn.fetchval("SELECT $1", "text") == "text"  # an unknown parameter is text, as in PostgreSQL
        with pytest.raises(asyncpg.DataError):
            await conn.fetchval("SELECT $1", 5)
        assert await conn.fetchval("SELECT i FROM t WHERE i > $1 LIMIT $2", 0, 1) == 7
        assert await conn.fetchrow("UPDATE t SET s = $1 WHERE id = $2 RETURNING id, s, i + 1", "new", 1) == (1, "new", 8)
        assert await conn.fetch("SELECT * FROM t WHERE id = $1", 999) == []
    finally:
        await conn.close()


async def test_transactions_prepared_statements_executemany_cursor_and_pool(instance) -> None:
    conn = await connect(instance)
    try:
        await conn.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, bal BIGINT NOT NULL)")
        await conn.executemany("INSERT INTO acc VALUES ($1, $2)", [(i, 100) for i in range(1, 11)])
        assert await conn.fetchval("SELECT sum(bal) FROM acc") == 1000
        # executemany is atomic (one batch up to Sync: one implicit transaction, as in PostgreSQL)
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.executemany("INSERT INTO acc VALUES ($1, $2)", [(11, 1), (12, 1), (5, 1), (13, 1)])
        assert await conn.fetchval("SELECT count(*) FROM acc") == 10 and not conn.is_in_transaction()
        await conn.executemany("INSERT INTO acc VALUES ($1, $2)", [(i, 0) for i in range(100, 3100)])  # > 32 KiB
        assert await conn.fetchval("SELECT count(*) FROM acc WHERE id >= $1", 100) == 3000
        await conn.execute("DELETE FROM acc WHERE id >= 100")
        async with conn.transaction():
            await conn.execute("UPDATE acc SET bal = bal - $1 WHERE id = $2", 30, 1)
            await conn.execute("UPDATE acc SET bal = bal + $1 WHERE id = $2", 30, 2)
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                await conn.execute("UPDATE acc SET bal = 0")
                raise RuntimeError("roll it back")
        async with conn.transaction():
            await conn.execute("UPDATE acc SET bal = bal + 1 WHERE id = 3")
            with pytest.raises(asyncpg.UniqueViolationError):
                async with conn.transaction():  # a savepoint
                    await conn.execute("UPDATE acc SET bal = bal - 1 WHERE id = 4")
                    await conn.execute("INSERT INTO acc VALUES (1, 0)")
        assert [tuple(r) for r in await conn.fetch("SELECT id, bal FROM acc WHERE id <= 4 ORDER BY id")] == \
            [(1, 70), (2, 130), (3, 101), (4, 100)]
        statement = await conn.prepare("SELECT bal FROM acc WHERE id = $1")
        assert [p.name for p in statement.get_parameters()] == ["int8"]
        assert [(a.name, a.type.name) for a in statement.get_attributes()] == [("bal", "int8")]
        assert [await statement.fetchval(i) for i in (1, 2, 3)] == [70, 130, 101]  # the same statement, reused
        async with conn.transaction():
            ids = [r["id"] async for r in conn.cursor("SELECT id FROM acc ORDER BY id", prefetch=3)]
        assert ids == list(range(1, 11))  # fetched 3 rows at a time (PortalSuspended)
        total = await conn.fetchval("SELECT sum(bal) FROM acc")
    finally:
        await conn.close()
    host, port = instance.address
    pool = await asyncpg.create_pool(host=host, port=port, user=USER, password=PASSWORD, database="tidemark",
                                     min_size=1, max_size=3)
    try:
        async def transfer(i: int) -> None:
            async with pool.acquire() as c, c.transaction():  # released with asyncpg's reset query
                await c.execute("UPDATE acc SET bal = bal - 1 WHERE id = $1", i % 10 + 1)
                await c.execute("UPDATE acc SET bal = bal + 1 WHERE id = $1", (i + 1) % 10 + 1)
        await asyncio.gather(*(transfer(i) for i in range(20)))
        assert await pool.fetchval("SELECT sum(bal) FROM acc") == total == 1001
    finally:
        await pool.close()


async def test_errors_are_asyncpg_exceptions_with_their_sqlstate(instance) -> None:
    conn = await connect(instance)
    try:
        await conn.execute("CREATE TABLE u (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        await conn.execute("INSERT INTO u VALUES ($1, $2)", 1, "a")
        cases = [
            (asyncpg.UniqueViolationError, "23505", "INSERT INTO u VALUES ($1, $2)", (1, "b")),
            (asyncpg.NotNullViolationError, "23502", "INSERT INTO u VALUES ($1, $2)", (2, None)),
            (asyncpg.PostgresSyntaxError, "42601", "SELEC $1", (1,)),
            (asyncpg.PostgresSyntaxError, "42601", "SELEC 1", ()),  # simple protocol
            (asyncpg.UndefinedTableError, "42P01", "SELECT * FROM nosuch WHERE k = $1", (1,)),
            (asyncpg.UndefinedColumnError, "42703", "SELECT nosuch FROM u", ()),
        ]
        for error, code, sql, args in cases:
            with pytest.raises(error) as info:
                await conn.execute(sql, *args)
            assert info.value.sqlstate == code, sql
        tx = conn.transaction()
        await tx.start()
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute("INSERT INTO u VALUES (1, 'c')")
        with pytest.raises(asyncpg.InFailedSQLTransactionError):  # 25P02 until the end
            await conn.fetchval("SELECT 1")
        await tx.rollback()
        with pytest.raises(asyncpg.ReadOnlySQLTransactionError):  # 25006
            async with conn.transaction(readonly=True):
                await conn.execute("INSERT INTO u VALUES ($1, $2)", 3, "c")
        assert await conn.fetchval("SELECT count(*) FROM u") == 1  # the session goes on, nothing changed
    finally:
        await conn.close()
    with pytest.raises(asyncpg.InvalidPasswordError) as info:
        await connect(instance, password="wrong")
    assert info.value.sqlstate == "28P01"


def test_parameter_and_column_types_are_inferred_from_the_schema() -> None:
    tables = {"t": [("id", "INTEGER"), ("s", "TEXT"), ("f", "REAL"), ("ts", "TIMESTAMP"), ("x", None)]}
    got = infer("SELECT id, s || 'x', count(*), f > 1, x FROM t WHERE id = $1 AND s LIKE $2 LIMIT $3",
                lambda name: tables.get(name, []))
    assert got.params == {1: pgtypes.INT8, 2: pgtypes.TEXT, 3: pgtypes.INT8}
    assert got.columns == [pgtypes.INT8, pgtypes.TEXT, pgtypes.INT8, pgtypes.BOOL, None]
    got = infer("INSERT INTO t (ts, f) VALUES ($1, $2)", lambda name: tables.get(name, []))
    assert got.params == {1: pgtypes.TIMESTAMP, 2: pgtypes.FLOAT8}
    got = infer("UPDATE t SET f = f + $1 WHERE ts < $2 AND x = $3", lambda name: tables.get(name, []))
    assert got.params == {1: pgtypes.FLOAT8, 2: pgtypes.TIMESTAMP}  # x has no declared type: text
    assert infer("SELEC $1", lambda name: []).params == {}
    for value in (0, -1, 10_000, 123456789012345678901234567890, "3.14159", "-0.0001", 1.5):
        assert pgtypes.decode_param(pgtypes.encode_binary(value, pgtypes.NUMERIC), pgtypes.NUMERIC, True) \
            == (float(value) if isinstance(value, str) else value)


@pytest.fixture
async def pair(tmp_path: Path):
    """A storage fleet, a writer instance and a replica following its feed."""
    async with writer_and_replica(tmp_path / "fleet", 256, FLEET_BASE, WRITER_HOST, REPLICA_HOST) as instances:
        yield instances


@pytest.mark.timeout(180)
async def test_writer_and_replica_over_a_fleet(pair) -> None:
    writer, replica = pair
    w, r = await connect(writer), await connect(replica)
    try:
        await w.execute("CREATE TABLE kv (k INTEGER PRIMARY KEY, v TEXT, at TIMESTAMP)")
        await w.executemany("INSERT INTO kv VALUES ($1, $2, $3)",
                            [(i, f"v{i}", datetime(2024, 1, 1, 0, 0, i)) for i in range(50)])
        deadline = time.monotonic() + 15
        while True:
            try:
                if await r.fetchval("SELECT count(*) FROM kv") == 50:
                    break
            except asyncpg.UndefinedTableError:
                pass
            assert time.monotonic() < deadline, "the replica never showed the writer's rows"
            await asyncio.sleep(0.05)
        read = await r.prepare("SELECT v, at FROM kv WHERE k = $1")
        assert [tuple(await read.fetchrow(k)) for k in (0, 49)] == \
            [("v0", datetime(2024, 1, 1)), ("v49", datetime(2024, 1, 1, 0, 0, 49))]
        for sql, args in (("INSERT INTO kv VALUES ($1, $2, $3)", (100, "x", None)),
                          ("UPDATE kv SET v = $1", ("y",)), ("DELETE FROM kv", ()), ("CREATE TABLE z (a INT)", ())):
            with pytest.raises(asyncpg.ReadOnlySQLTransactionError) as info:
                await r.execute(sql, *args)
            assert info.value.sqlstate == "25006"
        assert await r.fetchval("SELECT count(*) FROM kv WHERE v = $1", "v7") == 1  # the replica goes on
        async with w.transaction():
            await w.execute("UPDATE kv SET v = $1 WHERE k = $2", "changed", 7)
        assert await w.fetchval("SELECT v FROM kv WHERE k = $1", 7) == "changed"
    finally:
        await w.close()
        await r.close()
    assert writer.pipeline.failed is None and writer.writer.fenced is None
