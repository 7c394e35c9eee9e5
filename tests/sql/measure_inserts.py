"""Figures for docs/sql.md (not a test): 1-row autocommit INSERTs through psycopg
against a writer instance on a fresh 6-node playground fleet.

    .venv/bin/python tests/sql/measure_inserts.py [--seconds 10] [--clients 1] [--single-range]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).parent))

from conftest import dsn_of, start_instance  # noqa: E402

from tidemark_playground import fleet as fleet_mod  # noqa: E402


async def _client(instance, until: float, latencies: list[float]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn_of(instance), autocommit=True) as conn:
        while time.monotonic() < until:
            started = time.perf_counter()
            await conn.execute("INSERT INTO t (v) VALUES (%s)", ("row",))
            latencies.append(time.perf_counter() - started)


async def main(seconds: float, clients: int, multi: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        fl, _ = await fleet_mod.up(Path(tmp) / "fleet", 2, 4, 256, 4096, "127.0.240.10")
        try:
            instance = await start_instance(fl, "127.0.240.5", multi_range=multi)
            try:
                async with await psycopg.AsyncConnection.connect(dsn_of(instance), autocommit=True) as conn:
                    await conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
                store = instance.engine.store
                commits0, bytes0, records0 = store.commits, store.redo_bytes, store.records
                latencies: list[float] = []
                started = time.monotonic()
                await asyncio.gather(*(_client(instance, started + seconds, latencies) for _ in range(clients)))
                elapsed = time.monotonic() - started
                q = statistics.quantiles(latencies, n=100)
                return {"clients": clients, "multi_range": multi, "txn": len(latencies),
                        "txn_per_s": round(len(latencies) / elapsed, 1),
                        "p50_ms": round(q[49] * 1000, 2), "p99_ms": round(q[98] * 1000, 2),
                        "redo_bytes_per_txn": round((store.redo_bytes - bytes0) / max(store.commits - commits0, 1), 1),
                        "records_per_txn": round((store.records - records0) / max(store.commits - commits0, 1), 2)}
            finally:
                await instance.close()
        finally:
            fl.down()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--single-range", action="store_true")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.seconds, args.clients, not args.single_range))))
