"""RocksDB key layout and the few primitives the node needs (synced batches, range scans).

Keys use big-endian integers so RocksDB's byte order is numeric order:
    L pg(4) lsn(8)            -> encoded record (as received, CRC included)
    X pg(4) page(8) lsn(8)    -> b""  per-page index of log records (reads, GC)
    V pg(4) page(8) lsn(8)    -> crc32c(4, LE) + page image (materialized version)
    M pg(4)                   -> segment meta JSON (written with the records it describes)
    N name                    -> node-level state (generation, peer directory)
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator

from rocksdict import (
    BlockBasedOptions,
    Cache,
    IngestExternalFileOptions,
    Options,
    Rdict,
    ReadOptions,
    SstFileWriter,
    WriteBatch,
    WriteOptions,
)

_PG = struct.Struct(">I")
_PG_LSN = struct.Struct(">IQ")
_PG_PAGE_LSN = struct.Struct(">IQQ")
_PG_PAGE = struct.Struct(">IQ")
MAX_U64 = (1 << 64) - 1


def log_key(pg: int, lsn: int) -> bytes:
    return b"L" + _PG_LSN.pack(pg, lsn)


def log_lsn(key: bytes) -> int:
    return _PG_LSN.unpack_from(key, 1)[1]


def index_key(pg: int, page: int, lsn: int) -> bytes:
    return b"X" + _PG_PAGE_LSN.pack(pg, page, lsn)


def version_key(pg: int, page: int, lsn: int) -> bytes:
    return b"V" + _PG_PAGE_LSN.pack(pg, page, lsn)


def page_lsn(key: bytes) -> tuple[int, int]:
    """(page, lsn) of an X or V key."""
    _pg, page, lsn = _PG_PAGE_LSN.unpack_from(key, 1)
    return page, lsn


def page_prefix(tag: bytes, pg: int, page: int) -> bytes:
    return tag + _PG_PAGE.pack(pg, page)


def meta_key(pg: int) -> bytes:
    return b"M" + _PG.pack(pg)


def pg_prefix(tag: bytes, pg: int) -> bytes:
    return tag + _PG.pack(pg)


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with `prefix`."""
    return (int.from_bytes(prefix, "big") + 1).to_bytes(len(prefix), "big")


def node_key(name: str) -> bytes:
    return b"N" + name.encode()


class Store:
    """One RocksDB per node; every segment's keys live in it, prefixed by PG."""

    def __init__(self, path: str, block_cache_mb: int = 32, write_buffer_mb: int = 16) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        # Memory budget: the node must stay small while holding ~1 GB, so cap the
        # block cache and the memtables instead of taking RocksDB's defaults.
        table = BlockBasedOptions()
        table.set_block_cache(Cache(block_cache_mb << 20))
        table.set_bloom_filter(10, False)
        table.set_cache_index_and_filter_blocks(True)
        opts.set_block_based_table_factory(table)
        opts.set_write_buffer_size(write_buffer_mb << 20)
        opts.set_max_write_buffer_number(3)
        opts.set_db_write_buffer_size(3 * write_buffer_mb << 20)
        opts.set_max_background_jobs(2)
        opts.set_max_open_files(256)
        opts.set_keep_log_file_num(2)
        self.db = Rdict(path, opts)
        self._sync = WriteOptions()
        self._sync.sync = True
        self._nosync = WriteOptions()

    # -- writes -------------------------------------------------------------------------
    @staticmethod
    def batch() -> WriteBatch:
        return WriteBatch(raw_mode=True)

    def write(self, batch: WriteBatch, sync: bool = True) -> None:
        """Blocking: call from an executor thread (RocksDB releases the GIL while syncing)."""
        self.db.write(batch, self._sync if sync else self._nosync)

    # -- bulk load (rebuild) ---------------------------------------------------------------
    @property
    def ingest_dir(self) -> str:
        """Scratch directory for SST files built for ingestion (same filesystem as the
        DB, so ingesting moves them instead of copying)."""
        path = self.path.rstrip("/") + ".ingest"
        os.makedirs(path, exist_ok=True)
        return path

    @staticmethod
    def sst_writer(path: str) -> SstFileWriter:
        """An SST file writer: keys must be put in strictly ascending order."""
        writer = SstFileWriter(Options(raw_mode=True))
        writer.open(path)
        return writer

    def ingest(self, paths: list[str]) -> None:
        """Blocking: move finished SST files into the DB, atomically. Durable when it
        returns: SstFileWriter.finish() fsyncs each file and RocksDB records the
        ingestion in its synced MANIFEST."""
        opts = IngestExternalFileOptions()
        opts.set_move_files(True)
        self.db.ingest_external_file(paths, opts)

    # -- reads --------------------------------------------------------------------------
    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def scan(self, start: bytes, end: bytes, limit: int = 0) -> Iterator[tuple[bytes, bytes]]:
        """Keys in [start, end), ascending; at most `limit` (0: no limit)."""
        ro = ReadOptions()
        ro.set_iterate_upper_bound(end)
        it = self.db.iter(ro)
        it.seek(start)
        n = 0
        while it.valid():
            yield it.key(), it.value()
            n += 1
            if limit and n >= limit:
                return
            it.next()

    def scan_keys(self, start: bytes, end: bytes, limit: int = 0) -> Iterator[bytes]:
        ro = ReadOptions()
        ro.set_iterate_upper_bound(end)
        it = self.db.iter(ro)
        it.seek(start)
        n = 0
        while it.valid():
            yield it.key()
            n += 1
            if limit and n >= limit:
                return
            it.next()

    def last_at_or_below(self, key: bytes, lower: bytes) -> tuple[bytes, bytes] | None:
        """The greatest entry with lower <= k <= key, if any."""
        it = self.db.iter()
        it.seek_for_prev(key)
        if it.valid():
            found = it.key()
            if found >= lower:
                return found, it.value()
        return None

    def disk_bytes(self) -> int:
        total = 0
        for entry in os.scandir(self.path):
            if entry.is_file(follow_symlinks=False):
                total += entry.stat().st_size
        return total

    def close(self) -> None:
        try:
            self.db.flush()
        finally:
            self.db.close()
