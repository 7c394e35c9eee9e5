"""The VFS over a writer (an in-memory fake with the real page formats): commit point,
journal mode, spreading over PGs, size across a restart, pipelining and its failure."""

from __future__ import annotations

import asyncio

import apsw
import pytest
from sqlfakes import FakeWriter

from tidemark_sql.engine import Engine
from tidemark_sql.pagestore import PageStore
from tidemark_sql.pipeline import CommitPipeline, InstanceFailed

pytestmark = [pytest.mark.sql, pytest.mark.timeout(60)]


async def _engine(writer: FakeWriter, cache_size: int | None = None, multi: bool = True) -> Engine:
    pipeline = CommitPipeline(writer)
    engine = Engine(PageStore(writer, asyncio.get_running_loop(), pipeline, multi_range=multi), cache_size)
    await engine.run(engine.open)
    return engine


def _sql(engine: Engine, sql: str, params: tuple = ()) -> list[tuple]:
    return engine.execute(sql, params).rows


async def test_one_mini_transaction_per_sqlite_transaction_spread_over_pgs() -> None:
    writer = FakeWriter()
    engine = await _engine(writer)
    try:
        await engine.run(_sql, engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
        base = engine.store.commits
        for i in range(5):
            await engine.run(_sql, engine, "INSERT INTO t (v) VALUES (?)", (f"v{i}",))
        assert engine.store.commits == base + 5
        await engine.run(_sql, engine, "SELECT * FROM t")
        assert engine.store.commits == base + 5, "a read commits nothing"

        def big_txn() -> None:
            engine.execute("BEGIN")
            for i in range(200):
                engine.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200 + str(i),))
            engine.execute("COMMIT")

        await engine.run(big_txn)
        assert engine.store.commits == base + 6
        layout = writer.topology.layout
        assert {layout.pg_of(p) for p in writer.pages} == set(range(layout.pg_count))
    finally:
        await engine.shutdown()


@pytest.mark.parametrize("mode", ["OFF", "WAL", "DELETE", "TRUNCATE"])
async def test_journal_modes_other_than_memory_are_refused(mode: str) -> None:
    engine = await _engine(FakeWriter())
    try:
        with pytest.raises(apsw.SQLError, match="refused"):
            await engine.run(_sql, engine, f"PRAGMA journal_mode={mode}")
        assert await engine.run(_sql, engine, "PRAGMA journal_mode") == [("memory",)]
        for suffix in ("-journal", "-wal"):
            assert engine.vfs.xAccess("tidemark.db" + suffix, apsw.SQLITE_ACCESS_EXISTS) is False
    finally:
        await engine.shutdown()


async def test_size_and_data_survive_a_restart_and_a_shrink() -> None:
    writer = FakeWriter()
    engine = await _engine(writer, cache_size=5)
    await engine.run(_sql, engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    await engine.run(_sql, engine, "INSERT INTO t (v) SELECT hex(randomblob(500)) FROM "
                     "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400) SELECT x FROM c)")
    pages = engine.store.pages
    await engine.shutdown()

    engine = await _engine(writer)
    try:
        assert engine.store.pages == pages
        assert await engine.run(_sql, engine, "SELECT count(*) FROM t") == [(400,)]
        await engine.run(_sql, engine, "DELETE FROM t WHERE id > 10")
        await engine.run(_sql, engine, "VACUUM")
        assert engine.store.pages < pages
        # invariant: everything beyond the size is zeros in the volume
        for index in range(engine.store.pages, pages):
            assert await engine.store.writer.read_page(engine.store.map.volume_page(index)) == bytes(4096)
        assert await engine.run(_sql, engine, "PRAGMA integrity_check") == [("ok",)]
    finally:
        await engine.shutdown()
    engine = await _engine(writer)
    try:
        assert await engine.run(_sql, engine, "SELECT count(*) FROM t") == [(10,)]
    finally:
        await engine.shutdown()


async def test_spill_rollback_and_half_failed_statement_with_a_tiny_cache() -> None:
    engine = await _engine(FakeWriter(), cache_size=5)
    try:
        await engine.run(_sql, engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER UNIQUE, pad TEXT)")
        await engine.run(_sql, engine, "INSERT INTO t (v, pad) SELECT x, hex(randomblob(300)) FROM "
                         "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 300) SELECT x FROM c)")

        def txn() -> tuple[list, list]:
            engine.execute("BEGIN")
            engine.execute("UPDATE t SET pad = 'changed' WHERE id <= 150")  # spills: cache is 5 pages
            with pytest.raises(apsw.ConstraintError):
                engine.execute("UPDATE t SET v = v + 1")  # fails half-way: v=2 exists
            inside = engine.execute("SELECT count(*) FROM t WHERE pad = 'changed'").rows
            engine.execute("ROLLBACK")
            return inside, engine.execute("SELECT count(*), sum(v) FROM t WHERE pad = 'changed'").rows

        inside, after = await engine.run(txn)
        assert inside == [(150,)], "the failed statement is undone, the earlier one stays"
        assert after == [(0, None)]
        assert await engine.run(_sql, engine, "SELECT sum(v) FROM t") == [(sum(range(1, 301)),)]
        assert await engine.run(_sql, engine, "PRAGMA integrity_check") == [("ok",)]
    finally:
        await engine.shutdown()


async def test_commits_pipeline_and_a_failure_poisons_every_later_one() -> None:
    writer = FakeWriter(auto_durable=False)
    engine = await _engine(writer)
    pipeline = engine.store.pipeline
    try:
        await engine.run(_sql, engine, "CREATE TABLE t (v)")
        first = pipeline.last_cpl
        await engine.run(_sql, engine, "INSERT INTO t VALUES (1)")  # does not wait for quorum
        second = pipeline.last_cpl
        assert second > first and writer.vdl == 0
        waiter = asyncio.create_task(pipeline.wait(second))
        await asyncio.sleep(0.05)
        assert not waiter.done()
        writer.make_durable(first)
        await asyncio.sleep(0.05)
        assert not waiter.done(), "answered before VDL passed its CPL"
        await engine.run(_sql, engine, "INSERT INTO t VALUES (2)")
        third = pipeline.last_cpl
        writer.fence(ConnectionError("lost"))
        with pytest.raises(InstanceFailed):
            await waiter
        with pytest.raises(InstanceFailed):
            await pipeline.wait(third)
        with pytest.raises(Exception):  # noqa: B017 - the VFS refuses the commit, SQLite rolls back
            await engine.run(_sql, engine, "INSERT INTO t VALUES (3)")
        await pipeline.wait(first)  # durable before the failure: still fine to answer
    finally:
        await engine.shutdown()


async def test_small_page_cache_never_evicts_a_page_that_is_not_durable() -> None:
    writer = FakeWriter(auto_durable=False)
    pipeline = CommitPipeline(writer)
    store = PageStore(writer, asyncio.get_running_loop(), pipeline, cache_pages=4)
    engine = Engine(store, cache_size=5)
    await engine.run(engine.open)
    try:
        await engine.run(_sql, engine, "CREATE TABLE t (id INTEGER PRIMARY KEY, pad TEXT)")
        await engine.run(_sql, engine, "INSERT INTO t (pad) SELECT hex(randomblob(1000)) FROM "
                         "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100) SELECT x FROM c)")
        assert len(store._cache) > 4, "pages awaiting quorum stay cached"
        writer.make_durable()
        await engine.run(_sql, engine, "INSERT INTO t (pad) VALUES ('x')")
        writer.make_durable()
        await engine.run(_sql, engine, "INSERT INTO t (pad) VALUES ('y')")
        assert len(store._cache) <= 6
        assert await engine.run(_sql, engine, "SELECT count(*) FROM t") == [(102,)]
        assert await engine.run(_sql, engine, "PRAGMA integrity_check") == [("ok",)]
        assert writer.reads > 0
    finally:
        await engine.shutdown()
