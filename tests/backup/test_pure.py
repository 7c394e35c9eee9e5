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


def _marks(node: str, seq: int, lo: int, hi: int, mtime: float) -> layout.Obj:
    return obj(layout.marks_key(node, 1, seq, lo, hi), size=16, mtime=mtime)


def test_retention_prunes_marks_manifests_and_registrations_no_point_needs():
    day = 86400.0
    pg0 = [obj(layout.snap_key(0, 10, 1, "a1", 2), mtime=1 * day),
           obj(layout.snap_key(0, 50, 1, "a1", 2), mtime=3 * day),
           obj(layout.snap_key(0, 90, 1, "a1", 2), mtime=6 * day),
           obj(layout.chunk_key(0, 0, 10, 1, "a1", 2), mtime=1 * day),
           obj(layout.chunk_key(0, 10, 50, 1, "a1", 2), mtime=3 * day),
           obj(layout.chunk_key(0, 50, 90, 1, "a1", 2), mtime=6 * day),
           obj(layout.chunk_key(0, 90, 95, 1, "a1", 2), mtime=7 * day)]
    pg1 = [obj(layout.snap_key(1, 40, 1, "b1", 1), mtime=2 * day),
           obj(layout.chunk_key(1, 0, 40, 1, "b1", 1), mtime=2 * day),
           obj(layout.chunk_key(1, 40, 95, 1, "b1", 1), mtime=7 * day)]
    marks = [_marks("a1", 1, 1, 9, 1 * day), _marks("a1", 2, 10, 45, 3 * day),
             _marks("a1", 3, 46, 60, 5 * day), _marks("a1", 4, 61, 95, 7 * day)]
    legacy = obj(layout.marks_key("a1", 1, 9), mtime=0.0)  # no VDL range in the key: kept
    manifests = [obj(layout.manifest_key(0, "a1", 1), mtime=0.0),  # gen 1 left nothing
                 obj(layout.manifest_key(0, "a1", 2), mtime=1 * day),
                 obj(layout.manifest_key(1, "b1", 1), mtime=0.0)]
    nodes = [obj(layout.node_key("a1", 1)), obj(layout.node_key("a1", 2)), obj(layout.node_key("b1", 1))]
    manual = [obj(layout.manual_snap_key("keep", 0), mtime=0.0), obj(layout.manual_manifest_key("keep"))]
    objs = pg0 + pg1 + marks + [legacy] + manifests + nodes + manual
    gone = set(plan_deletes(objs, 7 * day, 3 * day))
    # Bases at the window start (day 4): PG 0 -> snapshot 50, PG 1 -> snapshot 40. The
    # lowest restorable LSN is then 50 (a point needs every PG): marks wholly below go.
    assert gone == {pg0[0].key, pg0[3].key, pg0[4].key, pg1[1].key, marks[0].key, marks[1].key,
                    manifests[0].key, nodes[0].key}
    kept = [o for o in objs if o.key not in gone]
    cats = catalog(kept)
    tl = Timeline([(5, 1), (45, 3), (50, 4), (60, 5), (95, 7)])
    assert tl.restorable(volume_intervals(cats, 2))[0] == (50, 4)  # the window start survives
    # A node pruning only PG 1 leaves PG 0 reaching back to LSN 0: the floor is PG 1's 40.
    gone1 = set(plan_deletes(objs, 7 * day, 3 * day, pgs={1}))
    assert marks[0].key in gone1 and marks[1].key not in gone1 and pg0[0].key not in gone1
    # Nothing old enough: only the superseded manifest and registration go, every mark stays.
    assert set(plan_deletes(objs, 2 * day, 3 * day)) == {manifests[0].key, nodes[0].key}
    # A PG with no restorable interval: nothing is restorable, no mark is dropped.
    broken = objs + [obj(layout.chunk_key(2, 5, 9, 1, "c1", 1), mtime=7 * day)]
    assert not any(k.startswith("marks/") for k in plan_deletes(broken, 7 * day, 3 * day))


def test_retention_pass_does_not_trust_a_corrupt_base(tmp_path):
    import os

    from tidemark_backup.objstore import open_store
    from tidemark_backup.retention import apply

    day = 86400.0
    store = open_store(f"file://{tmp_path}")
    hdr = {"pg": 0, "page_size": 16, "node": "a1", "gen": 1, "epoch": 1}
    items = {layout.snap_key(0, 10, 1, "a1", 1): (chunks.encode_snap({**hdr, "lsn": 10}, {0: b"a" * 16}), 1),
             layout.snap_key(0, 50, 1, "a1", 1): (b"TMK1 mangled", 3),
             layout.chunk_key(0, 0, 10, 1, "a1", 1): (b"c", 1),
             layout.chunk_key(0, 10, 50, 1, "a1", 1): (b"c", 3),
             layout.chunk_key(0, 50, 90, 1, "a1", 1): (b"c", 6)}
    for key, (data, d) in items.items():
        store.put(key, data)
        os.utime(store._path(key), (d * day, d * day))
    # The day-3 base is mangled: the day-1 snapshot stays the base, only what is older
    # than it goes (the chunk ending at 10), and the chain 10 -> 50 -> 90 survives.
    assert apply(store, 7 * day, 3 * day) == [layout.chunk_key(0, 0, 10, 1, "a1", 1)]
    assert apply(store, 7 * day, 3 * day, verify=False) == sorted(
        [layout.snap_key(0, 10, 1, "a1", 1), layout.chunk_key(0, 10, 50, 1, "a1", 1)])


def test_metrics_break_down_the_retention_storage():
    objs = [obj(layout.snap_key(0, 10, 1, "a1", 1), size=1000), obj(layout.chunk_key(0, 10, 20, 1, "a1", 1), size=300),
            _marks("a1", 1, 10, 20, 0.0)]
    m = compute(objs, [], 4096, retention_s=86400.0, now=1.0)
    assert (m["baseImageBytes"], m["changeRecordBytes"], m["marksBytes"]) == (1000, 300, 16)
    assert m["BackupRetentionPeriodStorageUsed"] == 1316
