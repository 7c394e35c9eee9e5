"""Pure parts of the backup: keys, object codec, chains, time mapping, retention."""

from __future__ import annotations

import pytest

from tidemark_backup import chunks, layout
from tidemark_backup.catalog import Timeline, catalog, volume_intervals
from tidemark_backup.metrics import compute
from tidemark_backup.retention import check_days, plan_deletes
from tidemark_protocol.records import Record, RecordFlags

pytestmark = [pytest.mark.backup, pytest.mark.unit]


def obj(key: str, size: int = 10, mtime: float = 0.0) -> layout.Obj:
    return layout.parse(key, size, mtime)


def test_keys_round_trip_and_garbage():
    o = obj(layout.chunk_key(3, 10, 20, 2, "a1", 7))
    assert (o.kind, o.pg, o.start, o.end, o.epoch, o.node, o.gen) == ("chunk", 3, 10, 20, 2, "a1", 7)
    s = obj(layout.snap_key(1, 99, 2, "b2", 3))
    assert (s.kind, s.pg, s.start, s.node, s.gen) == ("snap", 1, 99, "b2", 3)
    assert obj(layout.marks_key("c1", 2, 5)).kind == "marks"
    assert obj(layout.node_key("c1", 2)).gen == 2
    assert obj("pg-00001/log/junk.bin").kind == "unknown"
    assert obj(layout.chunk_key(3, 20, 20, 2, "a1", 7)).kind == "unknown"  # empty range
    # Keys are unique per node generation: two writers never share a key.
    assert layout.chunk_key(0, 1, 2, 1, "a1", 1) != layout.chunk_key(0, 1, 2, 1, "a1", 2)


def test_codec_detects_truncation_and_corruption():
    recs = [Record(5, 0, 1, 0, 0, RecordFlags.CPL, b"xy").encode()]
    data = chunks.encode_chunk({"pg": 0, "start": 4, "end": 9}, recs)
    hdr, records = chunks.decode_chunk(data)
    assert hdr["end"] == 9 and records[0].lsn == 5
    for bad in (data[:-1], data[: len(data) // 2], data[:20] + b"\x00" + data[21:], b"junk"):
        with pytest.raises(chunks.BadObject):
            chunks.decode_chunk(bad)
    with pytest.raises(chunks.BadObject):  # a record outside the claimed range
        chunks.decode_chunk(chunks.encode_chunk({"pg": 0, "start": 5, "end": 9}, recs))
    snap = chunks.encode_snap({"pg": 0, "page_size": 16, "lsn": 5}, {3: b"a" * 16})
    assert chunks.decode_snap(snap)[1] == {3: b"a" * 16}
    marks = chunks.encode_marks({}, [(5, 100), (9, 200)])
    assert chunks.decode_marks(marks)[1] == [(5, 100), (9, 200)]


def test_chains_intervals_and_gaps():
    objs = [obj(layout.chunk_key(0, 0, 10, 1, "a1", 1)), obj(layout.chunk_key(0, 10, 20, 1, "a1", 1)),
            obj(layout.chunk_key(0, 30, 40, 1, "a2", 1)), obj(layout.snap_key(0, 30, 1, "a2", 1)),
            obj(layout.chunk_key(1, 0, 40, 1, "b1", 1))]
    cats = catalog(objs)
    assert cats[0].intervals() == [(0, 20), (30, 40)]  # a gap (20, 30) only a snapshot bridges
    assert volume_intervals(cats, 2) == [(0, 20), (30, 40)]
    assert volume_intervals(cats, 3) == []  # PG 2 has nothing
    base, used = cats[0].chain(35)
    assert base == 30 and [c.start for c in used] == [30]
    assert cats[0].chain(25) is None
    base, used = cats[0].chain(15)
    assert base == 0 and [c.end for c in used] == [10, 20]


def test_timeline_maps_time_to_last_mark():
    tl = Timeline([(10, 100), (20, 200), (20, 150), (30, 300), (25, 310)])
    assert tl.lsn_at(99) is None
    assert tl.lsn_at(100) == 10 and tl.lsn_at(149) == 10 and tl.lsn_at(199) == 20
    assert tl.lsn_at(150) == 20 and tl.lsn_at(1000) == 30
    assert tl.restorable([(0, 20)]) == [(10, 100), (20, 150)]


def test_retention_keeps_what_the_window_needs():
    day = 86400.0
    objs = [obj(layout.snap_key(0, 10, 1, "a1", 1), mtime=1 * day),
            obj(layout.snap_key(0, 50, 1, "a1", 1), mtime=3 * day),
            obj(layout.snap_key(0, 90, 1, "a1", 1), mtime=6 * day),
            obj(layout.chunk_key(0, 0, 10, 1, "a1", 1), mtime=1 * day),
            obj(layout.chunk_key(0, 10, 50, 1, "a1", 1), mtime=3 * day),
            obj(layout.chunk_key(0, 50, 90, 1, "a1", 1), mtime=6 * day),
            obj(layout.chunk_key(0, 90, 95, 1, "a1", 1), mtime=7 * day),
            obj("manual/keep/manifest.json", mtime=0.0), obj("pg-00000/log/junk", mtime=0.0)]
    # Window of 3 days at day 7 starts at day 4: the base is the day-3 snapshot (LSN 50).
    gone = plan_deletes(objs, 7 * day, 3 * day)
    assert gone == sorted([objs[0].key, objs[3].key, objs[4].key])
    assert plan_deletes(objs, 2 * day, 3 * day) == []  # nothing old enough yet
    assert check_days(35) == 35
    with pytest.raises(ValueError):
        check_days(36)


def test_metrics_follow_the_article_definitions():
    page = 4096
    objs = [obj(layout.snap_key(0, 10, 1, "a1", 1), size=10 * (page + 8) + 300),
            obj(layout.chunk_key(0, 10, 20, 1, "a1", 1), size=5000)]
    manual = [{"name": "old", "created": 0.0, "volume_bytes": 10 * page},
              {"name": "new", "created": 9e9, "volume_bytes": 10 * page}]
    m = compute(objs, manual, page, retention_s=86400.0, now=200000.0)
    assert m["VolumeBytesUsed"] == 10 * page
    assert m["BackupRetentionPeriodStorageUsed"] == 10 * (page + 8) + 300 + 5000
    assert m["SnapshotStorageUsed"] == 10 * page  # only the one older than the window
    assert m["TotalBackupStorageBilled"] == (m["BackupRetentionPeriodStorageUsed"]
                                             + m["SnapshotStorageUsed"] - m["VolumeBytesUsed"])


def test_fast_chunk_decoder_agrees_and_rejects_garbage():
    recs = [Record(5, 2, 7, 0, 0, RecordFlags.CPL, b"ab").encode(),
            Record(6, 2, 8, 5, 0, RecordFlags.FULL_IMAGE, b"c" * 16).encode()]
    data = chunks.encode_chunk({"pg": 2, "start": 4, "end": 9}, recs)
    _h, fast = chunks.decode_chunk_fast(data)
    _h, full = chunks.decode_chunk(data)
    assert fast == [(r.lsn, r.page, int(r.flags), r.payload) for r in full]
    for bad in (data[:-3], data[:30], chunks.encode_chunk({"pg": 3, "start": 4, "end": 9}, recs),
                chunks.encode_chunk({"pg": 2, "start": 4, "end": 9}, recs[:1] + [b"xx"])):
        with pytest.raises(chunks.BadObject):
            chunks.decode_chunk_fast(bad)
