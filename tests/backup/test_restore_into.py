"""restore_into: a backup at T installed straight into an existing EMPTY fleet (the
install endpoint), then read exactly, written to, and backed up again; refusals."""

from __future__ import annotations

import random

import google_crc32c
import pytest

from tidemark_backup.objstore import open_store
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_protocol.node_auth import Role
from tidemark_protocol.writer_core import Change
from tidemark_restore.install import install_file, restore_into
from tidemark_restore.inventory import RestoreError, iso, load_inventory, parse_time, rebuild_volume
from tidemark_restore.status import status_of

from .conftest import backup_fleet, base_ip, check_pages, read_volume, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.timeout(300)]


def _image(tag: int) -> bytes:
    return random.Random(tag).randbytes(4096)


async def test_restore_into_empty_fleet_then_write_and_back_up(tmp_path, s3_url):
    async with backup_fleet(tmp_path / "src", s3_url) as bf:
        await bf.workload(5, concurrency=8, seed=3)
        end_us = bf.marks[-1][1]
        await wait_until(lambda: (status_of(s3_url)["latestRestorableTime"] or "") >= iso(end_us),
                         90, "backup to catch up with the workload")  # slow under a loaded machine
    st = status_of(s3_url)
    first = parse_time(st["firstRecoverableTime"])
    t = random.Random(9).randint(first, end_us)
    store = open_store(s3_url)
    inv = load_inventory(store)
    url2 = s3_url.rsplit("/", 1)[0] + "/restored"
    fleet, topology = await fleet_mod.up(
        tmp_path / "dst", 2, 4, 16, 4096, base_ip(), backup=url2,
        backup_options={"backup_interval": 0.5, "backup_snapshot_interval": 3.0})
    try:
        phases: list[tuple[str, int, int]] = []
        result = await _in_thread(restore_into, store, t, topology, lambda *a: phases.append(a))
        assert result["lsn"] == inv.lsn_for(t) and result["problems"] == []
        assert result["new_vdl"] >= result["lsn"]
        assert ("install", 4, 4) in phases and ("open", 1, 1) in phases
        pages = await read_volume(topology, bf.model.pages())
        check_pages(pages, bf.model, bf.marks, t)  # exactly the commits at or before T
        # A second restore into the now non-empty fleet is refused, nothing changes.
        with pytest.raises(RestoreError, match="not empty"):
            await _in_thread(restore_into, store, t, topology)
        # New commits work on the restored volume and reach its own backup.
        writer = await Writer.open(topology)
        try:
            touched = {3: _image(1), 20: _image(2), 63: _image(3)}
            for page, img in touched.items():
                await writer.commit([Change(page, img, full_image=True)])
            new_marks = writer.marks_since(0)[0]
        finally:
            await writer.close()
        after = await read_volume(topology, sorted(set(bf.model.pages()) | set(touched)))
        for page, img in touched.items():
            assert after[page] == img
        for page in bf.model.pages():
            if page not in touched:
                assert after[page] == pages[page]
        last_us = new_marks[-1][1]
        await wait_until(lambda: (status_of(url2)["latestRestorableTime"] or "") >= iso(last_us),
                         120, "the restored fleet's backup to cover the new commits")
        st2 = status_of(url2)
        assert st2["problems"] == [] and st2["lastError"] is None
        store2 = open_store(url2)
        inv2 = load_inventory(store2)
        again = rebuild_volume(store2, inv2, inv2.lsn_for(last_us))
        zero = bytes(4096)
        for page in set(after) | set(again):
            assert again.get(page, zero) == after.get(page, zero), f"page {page}"
    finally:
        fleet.down()


async def test_restore_into_refuses_other_layout_and_bad_install(tmp_path, s3_url):
    async with backup_fleet(tmp_path / "src", s3_url) as bf:
        await bf.workload(2, concurrency=4, seed=4)
        end_us = bf.marks[-1][1]
        await wait_until(lambda: (status_of(s3_url)["latestRestorableTime"] or "") >= iso(end_us),
                         90, "backup to catch up with the workload")  # slow under a loaded machine
    store = open_store(s3_url)
    fleet, topology = await fleet_mod.up(tmp_path / "dst", 2, 4, 32, 4096, base_ip())
    try:
        with pytest.raises(RestoreError, match="layout"):
            await _in_thread(restore_into, store, end_us, topology)
        # The install endpoint checks the body's CRC, then every key and image CRC of
        # the file, before installing anything.
        name = sorted(topology.memberships[1].all_members)[0]
        url = f"{topology.nodes[name]}/v1/segments/1/install"
        good = install_file(1, 7, {32: _image(5), 40: _image(6)})
        crc = google_crc32c.value(good)
        flipped = bytearray(good)
        flipped[2000] ^= 1  # inside the first image: the file stays readable
        flipped = bytes(flipped)
        other_pg = install_file(2, 7, {64: _image(5)})
        other_lsn = install_file(1, 8, {32: _image(5)})
        cases = [
            (flipped, crc, 2, 400, "crc32c"),  # damaged in transit
            (flipped, google_crc32c.value(flipped), 2, 400, ""),  # damaged at the source
            (b"not an sst" * 100, google_crc32c.value(b"not an sst" * 100), 2, 400, "SST"),
            (other_pg, google_crc32c.value(other_pg), 1, 400, "not a page of pg 1"),
            (other_lsn, google_crc32c.value(other_lsn), 1, 400, "not a page of pg 1"),
            (good, crc, 3, 400, "announced"),
            (good, crc, 2, 200, ""),
            (good, crc, 2, 200, "already"),  # a retried restore: idempotent
        ]
        async with topology.session(Role.ADMIN) as http:
            for body, c, count, status, text in cases:
                params = {"lsn": "7", "count": str(count), "crc32c": str(c)}
                async with http.post(url, params=params, data=body) as resp:
                    got = await resp.text()
                    assert resp.status == status and text in got, got
            other = install_file(1, 9, {32: _image(5)})
            params = {"lsn": "9", "count": "1", "crc32c": str(google_crc32c.value(other))}
            async with http.post(url, params=params, data=other) as resp:
                assert resp.status == 409 and "segment_not_empty" in await resp.text()
            async with http.get(f"{topology.nodes[name]}/v1/status") as resp:
                seg = next(s for s in (await resp.json())["segments"] if s["pg"] == 1)
        assert seg["scl"] == 7 and seg["records"] == 0
    finally:
        fleet.down()


async def _in_thread(fn, *args):
    import asyncio

    return await asyncio.to_thread(fn, *args)
