"""Incremental base images (format 2): keys and codecs, what a new image shares, what
retention may drop, and restores from format-2, format-1 (full snapshots) and mixed
buckets in a local store, plain and encrypted. No fleet: the bucket is written here as
the uploader writes it (images.plan + the codecs)."""

from __future__ import annotations

import os

import pytest

from tidemark_backup import chunks, images, layout, retention
from tidemark_backup.catalog import catalog
from tidemark_backup.metrics import compute
from tidemark_backup.objstore import ObjStore, open_store
from tidemark_backup.sealed import Key, Keyring
from tidemark_protocol.records import Record, RecordFlags
from tidemark_restore.inventory import rebuild_pg

pytestmark = [pytest.mark.backup, pytest.mark.unit]

PAGE = 64
PAGES_PER_PG = 8
SPAN = 2  # pages per extent (images.span_of(PAGE, 2 * PAGE))
DAY = 86400.0


def img(tag: int) -> bytes:
    return bytes([tag % 251 + 1]) * PAGE


def test_image_and_extent_keys_round_trip():
    i = layout.parse(layout.image_key(3, 42, 2, "a1", 7, 9), 10, 5.0)
    assert (i.kind, i.pg, i.start, i.end, i.epoch, i.node, i.gen, i.pages, i.is_base) == (
        "image", 3, 42, 42, 2, "a1", 7, 9, True)
    e = layout.parse(layout.extent_key(3, 16, 40, 2, "b2", 1))
    assert (e.kind, e.pg, e.first, e.start, e.node, e.gen, e.is_base) == ("extent", 3, 16, 40, "b2", 1, False)
    assert layout.parse(layout.snap_key(0, 5, 1, "a1", 1)).is_base  # format 1: still a base
    assert layout.parse("pg-00001/img/junk.img").kind == "unknown"
    assert layout.extent_key(3, 16, 40, 2, "b2", 1).startswith(layout.extent_dir(3))


def test_extent_and_image_codecs_check_themselves():
    pages = {17: img(1), 19: img(2)}
    data = chunks.encode_extent({"pg": 2, "lsn": 9, "page_size": PAGE}, 16, 4, pages)
    hdr, got = chunks.decode_extent(data)
    assert got == pages and (hdr["first"], hdr["span"], hdr["pages"]) == (16, 4, 2)
    assert len(data) < 2 * PAGE + 150  # a bitmap, not a page number per page
    for bad in (data[:-1], data[:40], data[:30] + b"\x00" + data[31:]):
        with pytest.raises(chunks.BadObject):
            chunks.decode_extent(bad)
    with pytest.raises(ValueError):  # a page outside the extent
        chunks.encode_extent({"pg": 2, "lsn": 9, "page_size": PAGE}, 16, 2, {19: img(1)})
    owner = (2, "a1", 1)
    refs = [(0, 9, 2, "a1", 1), (2, 5, 1, "b1", 3)]
    data = chunks.encode_image({"pg": 0, "lsn": 9}, refs, 4, owner)
    assert b'[0,9]' in data  # the image's own extents are listed compactly
    assert chunks.decode_image(data, owner)[1] == refs


def test_plan_writes_only_changed_extents_that_are_not_in_the_bucket():
    first = 8  # PG 1
    v1 = {8: img(1), 9: img(2), 10: img(3), 13: img(4)}
    p1 = images.plan(v1, first, SPAN, 10, 1, "a1", 1, {}, set(), 1)
    assert sorted(p1.new) == [8, 10, 12] and p1.pages == 4  # first image: every extent
    keys = {images.ref_key(1, r) for r in p1.refs}
    v2 = {**v1, 10: img(9)}  # one page changed: only its extent is new
    p2 = images.plan(v2, first, SPAN, 20, 1, "a1", 1, p1.digests, keys, 1)
    assert sorted(p2.new) == [10]
    assert [r[1] for r in p2.refs] == [10, 20, 10]
    keys |= {images.ref_key(1, r) for r in p2.refs}
    gone = images.ref_key(1, p1.digests[12][0])  # retention dropped it: written again
    p3 = images.plan(v2, first, SPAN, 30, 1, "a1", 1, p2.digests, keys - {gone}, 1)
    assert sorted(p3.new) == [12]


class Bucket:
    """Writes PG 0 of a one-PG volume as the uploader would: chunks of full-image
    records, marks, and base images (incremental or, for format 1, full snapshots)."""

    def __init__(self, store: ObjStore) -> None:
        self.store = store
        self.pages: dict[int, bytes] = {}
        self.lsn = 0
        self.parent: dict = {}
        self.history: dict[int, dict[int, bytes]] = {0: {}}
        self.times: dict[str, float] = {}

    def put(self, key: str, data: bytes, day: float) -> None:
        self.store.put(key, data)
        self.times[key] = day

    def commit(self, changes: dict[int, bytes], day: float) -> None:
        recs = []
        start = self.lsn
        for i, (page, image) in enumerate(sorted(changes.items())):
            self.lsn += 1
            flags = RecordFlags.FULL_IMAGE | (RecordFlags.CPL if i == len(changes) - 1 else 0)
            recs.append(Record(self.lsn, 0, page, 0, 0, flags, image).encode())
        self.pages.update(changes)
        self.history[self.lsn] = dict(self.pages)
        hdr = {"pg": 0, "start": start, "end": self.lsn}
        self.put(layout.chunk_key(0, start, self.lsn, 1, "a1", 1), chunks.encode_chunk(hdr, recs), day)
        self.put(layout.marks_key("a1", 1, self.lsn, self.lsn, self.lsn),
                 chunks.encode_marks({}, [(self.lsn, int(day * 1e6))]), day)

    def image(self, day: float) -> None:
        plan = images.plan(self.pages, 0, SPAN, self.lsn, 1, "a1", 1, self.parent,
                           {o.key for o in self.store.list(layout.extent_dir(0))}, 0)
        hdr = {"pg": 0, "lsn": self.lsn, "page_size": PAGE}
        for first, ext in plan.new.items():
            self.put(layout.extent_key(0, first, self.lsn, 1, "a1", 1),
                     chunks.encode_extent(hdr, first, SPAN, ext), day)
        self.put(layout.image_key(0, self.lsn, 1, "a1", 1, plan.pages),
                 chunks.encode_image(hdr, plan.refs, plan.pages, (1, "a1", 1)), day)
        self.parent = plan.digests

    def full_snapshot(self, day: float) -> None:  # format 1
        hdr = {"pg": 0, "lsn": self.lsn, "page_size": PAGE, "start": self.lsn, "end": self.lsn}
        self.put(layout.snap_key(0, self.lsn, 1, "a1", 1), chunks.encode_snap(hdr, self.pages), day)

    def age(self) -> None:
        """Objects get their day as modification time (retention goes by it)."""
        for key, day in self.times.items():
            path = self.store._path(key)  # type: ignore[attr-defined]
            if path.exists():
                os.utime(path, (day * DAY, day * DAY))

    def rebuild(self, lsn: int) -> dict[int, bytes]:
        problems: list[str] = []
        cat = catalog(self.store.list(""))[0]
        got = rebuild_pg(self.store, cat, lsn, PAGE, problems)
        assert not problems, problems
        return got


def _days(b: Bucket, full_first: bool = False) -> None:
    """Day 1: 6 pages; days 2, 3, 6: page 0 updated; an image after each day."""
    b.commit({p: img(p) for p in range(6)}, 1)
    b.full_snapshot(1) if full_first else b.image(1)
    for day in (2, 3, 6):
        b.commit({0: img(100 + day)}, day)
        b.image(day)
    b.age()


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "encrypted"])
def test_incremental_images_share_extents_restore_exactly_and_retention_drops_dead_ones(tmp_path, keyed):
    keys = Keyring([Key.of(bytes(range(32)))]) if keyed else Keyring()
    b = Bucket(open_store(f"file://{tmp_path}", keyring=keys))
    _days(b)
    objs = b.store.list("")
    ext = [o for o in objs if o.kind == "extent"]
    assert len(ext) == 3 + 3  # day 1: 3 extents; days 2, 3, 6: only page 0's extent
    for lsn, pages in b.history.items():  # every point (base + chunks) restores exactly
        if lsn:
            assert b.rebuild(lsn) == pages, lsn
    # Day 7, 3-day window (start: day 4): the base is day 3's image. Day 1's and day 2's
    # images go, and so does every extent only they listed (page 0's day-1 and day-2
    # versions); the extents of pages 2..5, written on day 1, stay (day 3 lists them).
    gone = set(retention.apply(b.store, 7 * DAY, 3 * DAY))
    left = [o for o in b.store.list("") if o.kind == "extent"]
    assert sorted((o.first, o.start) for o in left) == [(0, 8), (0, 9), (2, 6), (4, 6)]
    assert {o.key for o in ext} - {o.key for o in left} <= gone
    day3 = max(lsn for lsn in b.history if lsn <= 8)
    assert b.rebuild(day3) == b.history[day3] and b.rebuild(b.lsn) == b.pages
    m = compute(b.store.list(""), [], PAGE, 3 * DAY, 7 * DAY)
    assert m["VolumeBytesUsed"] == 6 * PAGE  # from the newest image's key
    stored = [o for o in b.store.list("") if o.kind in ("image", "extent")]
    assert m["baseImageBytes"] == sum(o.size for o in stored)


def test_retention_keeps_young_unlisted_extents_and_those_of_an_unreadable_image():
    def o(key: str, day: float) -> layout.Obj:
        return layout.parse(key, 10, day * DAY)

    i1, i2 = o(layout.image_key(0, 10, 1, "a1", 1, 4), 1), o(layout.image_key(0, 20, 1, "a1", 1, 4), 5)
    e_old, e_shared = o(layout.extent_key(0, 0, 10, 1, "a1", 1), 1), o(layout.extent_key(0, 2, 10, 1, "a1", 1), 1)
    e_new = o(layout.extent_key(0, 0, 20, 1, "a1", 1), 5)
    e_young = o(layout.extent_key(0, 4, 30, 1, "a1", 1), 6.9)  # its image is still being written
    objs = [i1, i2, e_old, e_shared, e_new, e_young, o(layout.chunk_key(0, 0, 10, 1, "a1", 1), 1),
            o(layout.chunk_key(0, 10, 20, 1, "a1", 1), 5)]
    refs = {i1.key: [e_old.key, e_shared.key], i2.key: [e_new.key, e_shared.key]}
    # Day 9, 3-day window: base = image 2 (day 5); image 1 and its own extent go.
    gone = set(retention.plan_deletes(objs, 9 * DAY, 3 * DAY, refs=refs))
    assert {i1.key, e_old.key} <= gone and not {e_shared.key, e_new.key, e_young.key} & gone
    # Younger than the window start it may belong to an image in flight (kept above);
    # once older than the window start, unlisted, it goes.
    assert e_young.key in set(retention.plan_deletes(objs, 9 * DAY, 1 * DAY, refs=refs))
    # An image whose list cannot be read: no extent of its PG goes.
    assert not any(k.endswith(".ext") for k in retention.plan_deletes(objs, 9 * DAY, 3 * DAY,
                                                                        refs={**refs, i2.key: None}))
    assert not any(k.endswith(".ext") for k in retention.plan_deletes(objs, 9 * DAY, 3 * DAY))


def test_a_format_1_bucket_and_a_mixed_one_still_restore(tmp_path):
    """Buckets written before format 2 hold full snapshots only; a node of this version
    continuing one writes incremental images next to them. Both restore every point,
    and retention drops the old full snapshot once an image is the base."""
    old = Bucket(open_store(f"file://{tmp_path / 'v1'}"))
    old.commit({p: img(p) for p in range(6)}, 1)
    old.full_snapshot(1)
    old.commit({0: img(7)}, 2)
    old.full_snapshot(2)
    old.age()
    assert not [o for o in old.store.list("") if o.kind in ("image", "extent")]
    for lsn, pages in old.history.items():
        if lsn:
            assert old.rebuild(lsn) == pages
    mixed = Bucket(open_store(f"file://{tmp_path / 'mixed'}"))
    _days(mixed, full_first=True)
    kinds = {o.kind for o in mixed.store.list("")}
    assert {"snap", "image", "extent"} <= kinds
    for lsn, pages in mixed.history.items():
        if lsn:
            assert mixed.rebuild(lsn) == pages, lsn
    gone = retention.apply(mixed.store, 7 * DAY, 3 * DAY)
    assert any(k.endswith(".snap") for k in gone)
    assert mixed.rebuild(mixed.lsn) == mixed.pages


def test_a_missing_or_mangled_extent_is_never_restored_from(tmp_path):
    b = Bucket(open_store(f"file://{tmp_path}"))
    _days(b)
    last = max(b.store.list(""), key=lambda o: (o.kind == "image", o.start))
    victim = images.image_refs(b.store, last)[-1]
    b.store.delete(victim)
    problems: list[str] = []
    got = rebuild_pg(b.store, catalog(b.store.list(""))[0], b.lsn, PAGE, problems)
    assert got == b.pages  # an earlier image + the chunks instead
    assert any(last.key in p for p in problems)
    assert not retention._intact(b.store, last)  # never trusted as a base


def test_retention_drops_an_uploaders_chunk_another_of_its_chunks_contains(tmp_path):
    """An idle PG's uploader extends its last empty chunk by writing one covering both:
    the contained one goes (never another uploader's, never for a holder that does
    not decode)."""
    store = open_store(f"file://{tmp_path}")
    hdr = {"pg": 0}
    keys = {"rec": layout.chunk_key(0, 0, 10, 1, "a1", 1), "e1": layout.chunk_key(0, 10, 20, 1, "a1", 1),
            "e2": layout.chunk_key(0, 10, 30, 1, "a1", 1), "other": layout.chunk_key(0, 10, 25, 1, "b1", 1)}
    for name, key in keys.items():
        s, e = layout.parse(key).start, layout.parse(key).end
        recs = [Record(5, 0, 1, 0, 0, RecordFlags.CPL, b"x").encode()] if name == "rec" else []
        store.put(key, chunks.encode_chunk({**hdr, "start": s, "end": e}, recs))
    objs = store.list("")
    assert retention.contained(objs) == {keys["e1"]: keys["e2"]}
    assert retention.apply(store, 1.0, 3 * DAY) == [keys["e1"]]
    assert catalog(store.list(""))[0].intervals() == [(0, 30)]  # coverage unchanged
    # A holder that does not decode is not trusted: what it contains stays.
    store.put(layout.chunk_key(0, 10, 40, 1, "b1", 1), b"TMK1 mangled")
    assert retention.apply(store, 1.0, 3 * DAY) == []
