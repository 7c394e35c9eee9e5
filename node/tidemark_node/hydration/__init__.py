"""Segment hydration (rebuild): fill a freshly created segment from its peers.

`POST /v1/segments/{pg}/hydrate` (handler.py) starts a background task (task.py) on a
segment just created with the new membership (`PUT /v1/segments/{pg}`):

1. snapshot (snapshot_fetch.py): stream a page snapshot at S (../snapshot.py, ~2 MiB
   CRC-checked frames) from one source; every page version is CRC-checked
   (frame_parser.py) and written, in the order received (ascending keys), into one SST
   file that is ingested into RocksDB at the end (sst_loader.py: atomic, durable; no
   WAL/memtable/compaction pass per page); a bad one is fetched from another source as
   a page read at the snapshot's base B. Then the segment's chain is re-based
   (rebase.py, SegmentLog.rebase): floor = SCL = B (the PG's last record <= S),
   materialized = GC horizons = B.
2. log (log_fetch.py): the records in (S, T] (T = lowest SCL among the usable sources)
   are fetched from SEVERAL sources in parallel: the LSN range is split into chunks
   that workers (one per source) take in order, each preferring its own source; a chunk
   a source cannot serve (error, refusal, bad CRC in transit, `X-Tidemark-Corrupt-LSN`)
   is re-fetched from the next source. Records go through intake's `ingest`: accepted
   into the chain (records from the writer meanwhile wait in `pending` and link as the
   gaps fill) and synced before they count.
3. catching_up (catch_up.py): pull from the most advanced peer until the SCL reaches
   what the peers had when this phase began; then `done`. Gossip takes over from there.

A token bucket (../ratelimit.py) caps the bytes per second over all of it; progress.py
keeps the `hydration` dict shown in /v1/status. While the segment is in `snapshot` or
`log`, gossip, GC and the scrubber skip it; the writer's frames are accepted throughout.
"""
