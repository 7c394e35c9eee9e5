"""The apsw VFS that keeps SQLite's main database file in the Tidemark volume.

Main-database writes are buffered per page and become ONE mini-transaction when SQLite
ends its transaction: on SQLITE_FCNTL_SYNC (sent once per transaction in every
journal and synchronous mode, before SQLite considers it committed, so a refused
commit rolls the transaction back) with COMMIT_PHASETWO as a backstop. xSync alone is
not enough: synchronous=OFF never calls it. The volume only ever holds whole committed
transactions, so there is never a hot journal (xAccess says so). Temporary files go
to the default VFS.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import apsw

from .pagestore import PageStore
from .replica_store import ReplicaPageStore

DB_NAME = "tidemark.db"
ALLOWED_JOURNAL_MODE = "memory"
_JOURNAL_SUFFIXES = ("-journal", "-wal", "-shm")
_names = itertools.count(1)


class RefusedPragma(apsw.SQLError):
    pass


class TidemarkFile:
    """SQLite's main database file: committed pages in the PageStore, dirty ones here."""

    def __init__(self, store: PageStore, on_close: Callable[[], None]) -> None:
        self.store = store
        self.on_close = on_close
        self.page_size = store.page_size
        self.dirty: dict[int, bytes] = {}
        self.size = store.load_size() * self.page_size

    def _image(self, index: int) -> bytes:
        image = self.dirty.get(index)
        if image is not None:
            return image
        if index * self.page_size >= self.size:
            return self.store.zero
        return self.store.read(index)

    def xRead(self, amount: int, offset: int) -> bytes:
        end = min(offset + amount, self.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, self.page_size)
            take = min(self.page_size - within, end - pos)
            out += self._image(index)[within : within + take]
            pos += take
        return bytes(out)  # short at EOF: SQLite zero-fills

    def xWrite(self, data: bytes, offset: int) -> None:
        pos = 0
        while pos < len(data):
            index, within = divmod(offset + pos, self.page_size)
            take = min(self.page_size - within, len(data) - pos)
            if within == 0 and take == self.page_size:
                self.dirty[index] = bytes(data[pos : pos + take])
            else:
                page = bytearray(self._image(index))
                page[within : within + take] = data[pos : pos + take]
                self.dirty[index] = bytes(page)
            pos += take
        self.size = max(self.size, offset + len(data))

    def xTruncate(self, newsize: int) -> None:
        self.size = newsize
        last = -(-newsize // self.page_size)
        for index in [i for i in self.dirty if i >= last]:
            del self.dirty[index]

    def xFileSize(self) -> int:
        return self.size

    def commit(self) -> None:
        """Ship the buffered pages as one mini-transaction (nothing if none changed)."""
        if not self.dirty and self.size == self.store.pages * self.page_size:
            return
        dirty, self.dirty = self.dirty, {}
        self.store.commit(dirty, -(-self.size // self.page_size))

    def xFileControl(self, op: int, ptr: int) -> bool:
        if op == apsw.SQLITE_FCNTL_SYNC or op == apsw.SQLITE_FCNTL_COMMIT_PHASETWO:
            self.commit()
            return True
        if op == apsw.SQLITE_FCNTL_PRAGMA:
            pragma = apsw.VFSFcntlPragma(ptr)
            if pragma.name.lower() == "journal_mode" and pragma.value is not None:
                if pragma.value.strip("'\" ").lower() != ALLOWED_JOURNAL_MODE:
                    raise RefusedPragma(
                        f"journal_mode={pragma.value} is refused on Tidemark: only "
                        "journal_mode=MEMORY keeps ROLLBACK and statement undo correct "
                        "(OFF corrupts on a cache spill; WAL would be a second log)"
                    )
            return False  # let SQLite run the pragma
        return False

    def xSync(self, flags: int) -> None:
        pass  # durability comes from the commit on SQLITE_FCNTL_SYNC

    def xLock(self, level: int) -> None:
        pass  # one connection in one process: SQLite's own locks suffice

    def xUnlock(self, level: int) -> None:
        pass

    def xCheckReservedLock(self) -> bool:
        return False

    def xSectorSize(self) -> int:
        return self.page_size

    def xDeviceCharacteristics(self) -> int:
        return apsw.SQLITE_IOCAP_POWERSAFE_OVERWRITE

    def xClose(self) -> None:
        self.dirty.clear()
        self.on_close()


FileClass = Callable[[Any, Callable[[], None]], object]


class TidemarkVFS(apsw.VFS):
    def __init__(self, store: PageStore | ReplicaPageStore, file_class: FileClass = TidemarkFile) -> None:
        self.vfs_name = f"tidemark-{next(_names)}"
        self.store = store
        self.file_class = file_class  # TidemarkFile (the writer) or ReplicaFile
        self.file: object | None = None
        super().__init__(self.vfs_name, base="")

    def xOpen(self, name: str | apsw.URIFilename | None, flags: list[int]) -> object:
        filename = name.filename() if isinstance(name, apsw.URIFilename) else name
        if filename == DB_NAME and flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            if self.file is not None:
                raise apsw.CantOpenError("the Tidemark database is already open")
            self.file = self.file_class(self.store, self._closed)
            return self.file
        return apsw.VFSFile("", name, flags)  # temp files: the default VFS

    def _closed(self) -> None:
        self.file = None

    def xAccess(self, pathname: str, flags: int) -> bool:
        if pathname == DB_NAME:
            return True
        if pathname.startswith(DB_NAME) and pathname.endswith(_JOURNAL_SUFFIXES):
            return False  # never a hot journal: the volume holds whole transactions only
        return super().xAccess(pathname, flags)

    def xDelete(self, filename: str, syncdir: bool) -> None:
        if filename.startswith(DB_NAME):
            return
        super().xDelete(filename, syncdir)

    def xFullPathname(self, name: str) -> str:
        return name if name.startswith(DB_NAME) else super().xFullPathname(name)
