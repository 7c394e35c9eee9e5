"""The main database file of a replica: read-only, read at the store's read point.

SQLite (normal locking mode) takes a SHARED lock at the start of every read
transaction and drops it at the end: that is where the read point moves.
"""

from __future__ import annotations

from collections.abc import Callable

import apsw

from .replica_store import ReplicaPageStore


class ReplicaFile:
    def __init__(self, store: ReplicaPageStore, on_close: Callable[[], None]) -> None:
        self.store = store
        self.on_close = on_close
        self.page_size = store.page_size
        self.locked = apsw.SQLITE_LOCK_NONE

    def xRead(self, amount: int, offset: int) -> bytes:
        end = min(offset + amount, self.store.pages * self.page_size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, self.page_size)
            take = min(self.page_size - within, end - pos)
            out += self.store.read(index)[within : within + take]
            pos += take
        return bytes(out)  # short at EOF: SQLite zero-fills

    def xWrite(self, data: bytes, offset: int) -> None:
        raise apsw.ReadOnlyError("a replica never writes the database")

    def xTruncate(self, newsize: int) -> None:
        raise apsw.ReadOnlyError("a replica never writes the database")

    def xFileSize(self) -> int:
        return self.store.pages * self.page_size

    def xLock(self, level: int) -> None:
        if self.locked == apsw.SQLITE_LOCK_NONE and level >= apsw.SQLITE_LOCK_SHARED:
            self.store.begin_read()  # a read transaction begins: one read point for all of it
        self.locked = max(self.locked, level)

    def xUnlock(self, level: int) -> None:
        if level == apsw.SQLITE_LOCK_NONE and self.locked != apsw.SQLITE_LOCK_NONE:
            self.store.end_read()
        self.locked = level

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == apsw.SQLITE_FCNTL_PRAGMA:  # query_only=1 is what turns writes into 25006: it stays on
            pragma = apsw.VFSFcntlPragma(ptr)
            if pragma.name.lower() == "query_only" and pragma.value is not None \
                    and pragma.value.strip("'\" ").lower() not in ("1", "on", "true", "yes"):
                raise apsw.ReadOnlyError("this is a read replica: it accepts no writes")
        return False

    def xSync(self, flags: int) -> None:
        pass

    def xSectorSize(self) -> int:
        return self.page_size

    def xDeviceCharacteristics(self) -> int:
        return apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE

    def xClose(self) -> None:
        self.on_close()
