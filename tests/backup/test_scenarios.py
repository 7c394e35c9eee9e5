"""Priority 4: the seed article's manual-snapshot scenarios 1 and 2 at small scale
(one "GB" of the article = 64 pages of 4 KiB here): snapshot sizes follow
VolumeBytesUsed; deleting rows does not shrink the volume, dropping a table does."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from tidemark_backup.cli import snapshot, status_of
from tidemark_backup.restore import iso
from tidemark_protocol.writer_core import Change

from .conftest import backup_fleet, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.timeout(240)]

UNIT = 64  # pages per article "10 GB"
PAGE = 4096


def rows(tag: int) -> bytes:
    return bytes([tag % 251 + 1]) * PAGE


def deleted_rows() -> bytes:
    """A page whose rows are all deleted: still allocated (page header survives)."""
    return b"\x01" + bytes(PAGE - 1)


async def write_pages(writer, pages: range, image) -> None:
    batch = 8
    for i in range(pages.start, pages.stop, batch):
        await writer.commit([Change(p, image(p), full_image=True) for p in range(i, min(i + batch, pages.stop))])


async def take(url: str, name: str, writer) -> dict:
    last = iso(writer.marks_since(0)[0][-1][1])  # the last commit's acknowledgement
    await wait_until(lambda: (status_of(url)["latestRestorableTime"] or "") >= last, 30, "backup catch-up")
    res = CliRunner().invoke(snapshot, ["create", "--from", url, "--name", name, "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output.strip().splitlines()[-1])


async def test_article_scenarios_1_and_2(tmp_path, s3_url):
    units = {}
    async with backup_fleet(tmp_path / "s1", s3_url, pgs=4, pages_per_pg=64) as bf:
        w = bf.writer
        await write_pages(w, range(0, UNIT), rows)                          # insert 10 GB
        units["scenario-1-backup-1"] = await take(s3_url, "scenario-1-backup-1", w)
        await write_pages(w, range(UNIT, 2 * UNIT), rows)                   # insert 10 GB more
        units["scenario-1-backup-2"] = await take(s3_url, "scenario-1-backup-2", w)
        await write_pages(w, range(UNIT, 2 * UNIT), lambda p: deleted_rows())  # DELETE 10 GB
        units["scenario-1-backup-3"] = await take(s3_url, "scenario-1-backup-3", w)
        await write_pages(w, range(UNIT, 2 * UNIT), lambda p: rows(p + 7))  # reuse freed space
        units["scenario-1-backup-4"] = await take(s3_url, "scenario-1-backup-4", w)
        await write_pages(w, range(2 * UNIT, 3 * UNIT), rows)               # grow to 30 GB
        units["scenario-1-backup-5"] = await take(s3_url, "scenario-1-backup-5", w)
        st1 = status_of(s3_url)
    sizes = {k: v["volume_bytes"] // (UNIT * PAGE) for k, v in units.items()}
    # The article's table: 10, 20, 20 (DELETE does not shrink), 20, 30 GB.
    assert list(sizes.values()) == [1, 2, 2, 2, 3], sizes
    assert st1["VolumeBytesUsed"] == 3 * UNIT * PAGE
    assert st1["SnapshotStorageUsed"] == 0  # manual snapshots inside the retention window are free
    assert st1["TotalBackupStorageBilled"] == max(
        0, st1["BackupRetentionPeriodStorageUsed"] - st1["VolumeBytesUsed"])

    url2 = s3_url + "-s2"
    units2 = {}
    async with backup_fleet(tmp_path / "s2", url2, pgs=4, pages_per_pg=64) as bf:
        w = bf.writer
        await write_pages(w, range(0, UNIT), rows)                          # table A, 10 GB
        units2["scenario-2-backup-1"] = await take(url2, "scenario-2-backup-1", w)
        await write_pages(w, range(UNIT, 2 * UNIT), rows)                   # table B, 10 GB
        units2["scenario-2-backup-2"] = await take(url2, "scenario-2-backup-2", w)
        await write_pages(w, range(0, UNIT), lambda p: bytes(PAGE))         # DROP TABLE A
        units2["scenario-2-backup-3"] = await take(url2, "scenario-2-backup-3", w)
        await write_pages(w, range(2 * UNIT, 3 * UNIT), rows)               # table C, 10 GB
        units2["scenario-2-backup-4"] = await take(url2, "scenario-2-backup-4", w)
    sizes2 = {k: v["volume_bytes"] // (UNIT * PAGE) for k, v in units2.items()}
    # The article's table: 10, 20, 10 (dropping a table frees its pages), 20 GB.
    assert list(sizes2.values()) == [1, 2, 1, 2], sizes2
    listed = CliRunner().invoke(snapshot, ["list", "--from", url2, "--json"])
    assert len(json.loads(listed.output)) == 4
    res = CliRunner().invoke(snapshot, ["delete", "--from", url2, "scenario-2-backup-1"])
    assert res.exit_code == 0, res.output
    listed = CliRunner().invoke(snapshot, ["list", "--from", url2, "--json"])
    assert [s["name"] for s in json.loads(listed.output)] == [
        "scenario-2-backup-2", "scenario-2-backup-3", "scenario-2-backup-4"]
