"""The SQLite engine of an instance: one apsw connection on its own thread.

Sessions take turns on the one connection (see gate.py); the thread runs one
statement at a time and never waits for a quorum: commits only submit (pipeline.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import apsw

from .pagestore import PageStore
from .replica_store import ReplicaPageStore
from .replica_vfs import ReplicaFile
from .vfs import DB_NAME, TidemarkFile, TidemarkVFS

T = TypeVar("T")


@dataclass(slots=True)
class Result:
    columns: list[tuple[str, str | None]] = field(default_factory=list)  # (name, decltype)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    changes: int = 0
    returns_rows: bool = False
    readonly: bool = True


class Engine:
    def __init__(self, store: PageStore | ReplicaPageStore, cache_size: int | None = None) -> None:
        self.store = store
        self.cache_size = cache_size
        self.replica = isinstance(store, ReplicaPageStore)
        self.vfs = TidemarkVFS(store, ReplicaFile if self.replica else TidemarkFile)
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="tidemark-sqlite")
        self.conn: apsw.Connection | None = None
        self.session_settings: dict[str, str] = {}  # of the session whose statement runs

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` on the SQLite thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def open(self, setup: Callable[[apsw.Connection], None] | None = None) -> None:
        """SQLite thread. Page size = volume page size; journal_mode=MEMORY (the VFS
        refuses any other); exclusive locking: this connection is the only one, so
        SQLite keeps its cache across transactions. A replica opens read-only (a write
        is SQLITE_READONLY: 25006) in normal locking mode, so every read transaction
        takes the SHARED lock that moves its read point."""
        if self.replica:
            conn = apsw.Connection(DB_NAME, vfs=self.vfs.vfs_name, flags=apsw.SQLITE_OPEN_READONLY)
        else:
            conn = apsw.Connection(DB_NAME, vfs=self.vfs.vfs_name,
                                   flags=apsw.SQLITE_OPEN_READWRITE | apsw.SQLITE_OPEN_CREATE)
            conn.execute(f"PRAGMA page_size={self.store.page_size}")
            mode = conn.execute("PRAGMA journal_mode=MEMORY").fetchall()[0][0]
            if mode.lower() != "memory":
                raise apsw.SQLError(f"could not set journal_mode=MEMORY (got {mode})")
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            conn.execute("PRAGMA synchronous=OFF")  # no xSync: the commit is the FCNTL_SYNC
        if self.cache_size is not None:
            conn.execute(f"PRAGMA cache_size={int(self.cache_size)}")
        page_size = conn.execute("PRAGMA page_size").fetchall()[0][0]
        if page_size != self.store.page_size:
            raise apsw.SQLError(f"database page size {page_size} != volume page size {self.store.page_size}")
        if setup is not None:
            setup(conn)
        if self.replica:  # after the TEMP catalog shims are in: every write is now 25006
            conn.execute("PRAGMA query_only=1")
        self.conn = conn

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> Result:
        """SQLite thread: one statement, every row fetched. The description is taken
        in the exec trace (after prepare, before the first step): a query with no rows
        still describes its columns."""
        assert self.conn is not None
        result = Result()

        def trace(cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
            result.columns = list(cursor.get_description())
            result.returns_rows = bool(result.columns)
            result.readonly = cursor.is_readonly
            return True

        before = self.conn.total_changes()
        cursor = self.conn.cursor()
        cursor.exec_trace = trace
        cursor.execute(sql, params)
        result.rows = cursor.fetchall() if result.returns_rows else []
        if not result.returns_rows:
            cursor.fetchall()
        result.changes = self.conn.total_changes() - before
        return result

    def describe(self, sql: str, nparams: int) -> list[tuple[str, str | None]]:
        """SQLite thread: the columns a statement would return, without running it."""
        assert self.conn is not None
        columns: list[tuple[str, str | None]] = []

        def trace(cursor: apsw.Cursor, _sql: str, _bindings: Any) -> bool:
            columns.extend(cursor.get_description())
            return False  # abort before the first step: nothing runs

        cursor = self.conn.cursor()
        cursor.exec_trace = trace
        try:
            cursor.execute(sql, (None,) * nparams)
        except apsw.ExecTraceAbort:
            pass
        return columns

    def table_columns(self, name: str) -> list[tuple[str, str | None]]:
        """SQLite thread: a table's (or view's) columns and declared types, in order."""
        assert self.conn is not None
        rows = self.conn.execute("SELECT name, type FROM pragma_table_info(?)", (name,)).fetchall()
        return [(col, decl or None) for col, decl in rows]

    @property
    def in_transaction(self) -> bool:
        return self.conn is not None and not self.conn.get_autocommit()

    def rollback_if_open(self) -> None:
        if self.in_transaction:
            self.conn.execute("ROLLBACK")  # type: ignore[union-attr]

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    async def shutdown(self) -> None:
        await self.run(self.close)
        self._thread.shutdown(wait=True)
        self.vfs.unregister()

