"""Figures for docs/sql.md and docs/benchmarks.md (not a test): page redo payload bytes
per pgbench TPC-B transaction, computed the way the instance does (pages.page_redo of
each changed page against its previous image), on pgbench's schema in a plain SQLite
file (page size 4096, journal_mode=MEMORY, exclusive locking). Bulk load as
`pgbench -i` does (accounts packed full), WARM transactions, then 300 measured.

    .venv/bin/python tests/sql/measure_redo.py [--scale 10] [--warm 2000] [--byte-diff]

--byte-diff: the multi patch only (the encoding before the move patch), to compare.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import apsw

from tidemark_protocol import pages

PAGE = 4096


def load(path: str, scale: int) -> apsw.Connection:
    conn = apsw.Connection(path)
    conn.execute(f"PRAGMA page_size={PAGE}")
    conn.execute("PRAGMA journal_mode=MEMORY")
    conn.execute("CREATE TABLE pgbench_branches(bid INT NOT NULL, bbalance INT, filler CHAR(88))")
    conn.execute("CREATE TABLE pgbench_tellers(tid INT NOT NULL, bid INT, tbalance INT, filler CHAR(84))")
    conn.execute("CREATE TABLE pgbench_accounts(aid INT NOT NULL, bid INT, abalance INT, filler CHAR(84))")
    conn.execute("CREATE TABLE pgbench_history(tid INT, bid INT, aid INT, delta INT, mtime TIMESTAMP, "
                 "filler CHAR(22))")
    with conn:
        for b in range(1, scale + 1):
            conn.execute("INSERT INTO pgbench_branches VALUES (?, 0, NULL)", (b,))
        for t in range(1, 10 * scale + 1):
            conn.execute("INSERT INTO pgbench_tellers VALUES (?, ?, 0, NULL)", (t, (t - 1) // 10 + 1))
        conn.execute("WITH RECURSIVE s(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM s WHERE x < ?) "
                     "INSERT INTO pgbench_accounts SELECT x, (x - 1) / 100000 + 1, 0, '' FROM s", (100000 * scale,))
    for table, key in (("branches", "bid"), ("tellers", "tid"), ("accounts", "aid")):
        conn.execute(f"CREATE UNIQUE INDEX pgbench_{table}_pkey ON pgbench_{table}({key})")
    conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    return conn


def tpcb(conn: apsw.Connection, rng: random.Random, scale: int) -> None:
    aid, bid = rng.randint(1, 100000 * scale), rng.randint(1, scale)
    tid, delta = rng.randint(1, 10 * scale), rng.randint(-5000, 5000)
    with conn:
        conn.execute("UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?", (delta, aid))
        conn.execute("SELECT abalance FROM pgbench_accounts WHERE aid = ?", (aid,)).fetchall()
        conn.execute("UPDATE pgbench_tellers SET tbalance = tbalance + ? WHERE tid = ?", (delta, tid))
        conn.execute("UPDATE pgbench_branches SET bbalance = bbalance + ? WHERE bid = ?", (delta, bid))
        conn.execute("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                     "VALUES (?, ?, ?, ?, CURRENT_TIMESTAMP)", (tid, bid, aid, delta))


def redo(old: bytes, new: bytes, byte_diff: bool) -> int:
    if not byte_diff:
        return sum(len(p) for p, _full in pages.page_redo(old, new))
    ranges = pages.diff_ranges(old, new)
    return min(len(pages.multi_patch_payload(ranges)), len(new.rstrip(b"\0"))) if ranges else 0


def main(scale: int, warm: int, measured: int, byte_diff: bool) -> None:
    path = str(Path(tempfile.mkdtemp(prefix="tidemark-redo-")) / "db")
    conn = load(path, scale)
    rng = random.Random(7)
    for _ in range(warm):
        tpcb(conn, rng, scale)
    total = records = 0
    with open(path, "rb") as f:
        before = f.read()
        for _ in range(measured):
            tpcb(conn, rng, scale)
            f.seek(0)
            after = f.read()
            for i in range(len(after) // PAGE):
                old = before[i * PAGE:(i + 1) * PAGE] if (i + 1) * PAGE <= len(before) else bytes(PAGE)
                new = after[i * PAGE:(i + 1) * PAGE]
                if old != new:
                    total += redo(old, new, byte_diff)
                    records += 1
            before = after
    print(f"scale {scale}: {total / measured:.0f} B of page redo payload per transaction, "
          f"{records / measured:.2f} records ({'byte diff' if byte_diff else 'with move patches'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--warm", type=int, default=2000)
    parser.add_argument("--measured", type=int, default=300)
    parser.add_argument("--byte-diff", action="store_true")
    args = parser.parse_args()
    main(args.scale, args.warm, args.measured, args.byte_diff)
