"""Encryption at rest of backups against the rig's real MinIO: objects in the bucket are
sealed (AES-256-GCM, tidemark_backup.sealed); a restore with the right key is exact; a
wrong or missing key, or an object tampered with in the bucket, is refused with one line
naming the key id and nothing is installed; keys rotate (keyring {A, B})."""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tidemark_backup.objstore import ObjStore, S3Store, open_store
from tidemark_backup.sealed import (
    Keyring,
    MissingKey,
    NotAuthentic,
    is_sealed,
    load_key_file,
    new_key_file,
)
from tidemark_cli.main import main
from tidemark_compute.writer import Writer
from tidemark_playground import fleet as fleet_mod
from tidemark_restore.install import check_empty_fleet, restore_into
from tidemark_restore.inventory import iso, load_inventory, rebuild_volume
from tidemark_restore.status import status_of_store

from .conftest import BackupFleet, backup_fleet, check_pages, read_volume, wait_until

pytestmark = [pytest.mark.backup, pytest.mark.process, pytest.mark.security, pytest.mark.timeout(300)]

NET = "127.0.166"  # every fleet of this module lives in 127.0.166.0/24


def _keys(tmp_path: Path, *names: str) -> list[Path]:
    for n in names:
        new_key_file(tmp_path / f"{n}.key")
    return [tmp_path / f"{n}.key" for n in names]


def _store(url: str, *key_files: Path) -> ObjStore:
    return open_store(url, keyring=Keyring.from_files(key_files))


async def _caught_up(store: ObjStore, end_us: int) -> None:
    await wait_until(lambda: (status_of_store(store)["latestRestorableTime"] or "") >= iso(end_us),
                     90, "the backup to catch up with the workload")


def _key_ids(store: ObjStore) -> dict[str, int]:
    """Key id -> objects sealed with it; every object in the bucket must be sealed."""
    ids: dict[str, int] = {}
    for o in store.list(""):
        raw = store.get_raw(o.key)
        assert is_sealed(raw), f"{o.key} is stored unencrypted"
        kid = raw[6 : 6 + raw[5]].decode()
        ids[kid] = ids.get(kid, 0) + 1
    return ids


async def _cli(*args: object):
    return await asyncio.to_thread(CliRunner().invoke, main, [str(a) for a in args])


def _one_line(result) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output, repr(result.exception))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


async def _backed_up(tmp_path: Path, url: str, ip: str, key: Path, seconds: float,
                     seed: int) -> tuple[BackupFleet, ObjStore, int]:
    """A fleet encrypting with KEY ran a workload; its backup covers it (fleet stopped):
    (the fleet's model and marks, the store opened with KEY, the last commit's time)."""
    async with backup_fleet(tmp_path / "src", url, ip=ip, key_files=[key]) as bf:
        await bf.workload(seconds, concurrency=8, seed=seed)
        end_us = bf.marks[-1][1]
        store = _store(url, key)
        await _caught_up(store, end_us)
    return bf, store, end_us


async def test_encrypted_backup_restores_exactly_and_refuses_a_wrong_or_no_key(tmp_path, s3_url):
    key, wrong = _keys(tmp_path, "a", "wrong")
    kid = load_key_file(key).id
    bf, store, end_us = await _backed_up(tmp_path, s3_url, f"{NET}.10", key, 4, 21)
    assert set(_key_ids(store)) == {kid}
    first = load_inventory(store).window()[0]
    t = random.Random(5).randint(first, end_us)

    # Wrong key, no key: one line naming the objects' key id; nothing made in DIR.
    for i, (key_args, why) in enumerate((([ "--backup-key-file", wrong], f"have {load_key_file(wrong).id}"),
                                          ([], "no backup key given"))):
        target = tmp_path / f"restored-{i}"
        line = _one_line(await _cli("restore", "--from", s3_url, "--to-time", iso(t), "--dir", target,
                                    "--base-ip", f"{NET}.110", *key_args))
        assert f"key id {kid}" in line and why in line, line
        assert not target.exists()
    with pytest.raises(MissingKey, match=kid):
        load_inventory(_store(s3_url, wrong))

    # The right key: exact (restore_into a new, empty fleet, then read every page).
    fleet, topology = await fleet_mod.up(tmp_path / "dst", 2, 4, 16, 4096, f"{NET}.30")
    try:
        result = await asyncio.to_thread(restore_into, store, t, topology)
        assert result["problems"] == []
        pages = await read_volume(topology, bf.model.pages())
        check_pages(pages, bf.model, bf.marks, t)
    finally:
        fleet.down()


def _flip(store: S3Store, key: str, at: float = 0.5) -> None:
    """Flip one byte of object KEY in the bucket, through the S3 client."""
    name = store.base + key
    data = bytearray(store.client.get_object(Bucket=store.bucket, Key=name)["Body"].read())
    data[int(len(data) * at)] ^= 0x20
    store.client.delete_object(Bucket=store.bucket, Key=name)
    store.client.put_object(Bucket=store.bucket, Key=name, Body=bytes(data))


async def test_tampered_object_is_detected_and_nothing_is_installed(tmp_path, s3_url):
    (key,) = _keys(tmp_path, "a")
    kid = load_key_file(key).id
    _bf, store, end_us = await _backed_up(tmp_path, s3_url, f"{NET}.50", key, 3, 22)
    inv = load_inventory(store)
    lsn = inv.lsn_for(end_us)
    base, used = inv.cats[3].chain(lsn)  # the last PG: the others rebuild fine first
    victim = used[-1].key if used else next(s.key for s in inv.cats[3].snaps if s.start == base)
    assert isinstance(store, S3Store)
    _flip(store, victim)
    with pytest.raises(NotAuthentic, match=f"{victim} failed authentication with key id {kid}"):
        await asyncio.to_thread(rebuild_volume, store, load_inventory(store), lsn)
    fleet, topology = await fleet_mod.up(tmp_path / "dst", 2, 4, 16, 4096, f"{NET}.70")
    try:
        with pytest.raises(NotAuthentic, match=victim):
            await asyncio.to_thread(restore_into, store, end_us, topology)
        await check_empty_fleet(topology, inv.layout)  # every segment still empty: nothing installed
    finally:
        fleet.down()
    # `tidemark restore` into a new fleet: one line, exit 1, and the fleet it made is gone.
    new = tmp_path / "new"
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "tidemark_cli.main", "restore", "--from", s3_url,
                         "--backup-key-file", str(key), "--to-time", iso(end_us), "--dir", str(new),
                         "--base-ip", f"{NET}.110"], capture_output=True, text=True, timeout=180)
    assert done.returncode == 1 and victim in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not new.exists(), sorted(p.name for p in new.iterdir())


async def test_key_rotation_keyring_restores_both_eras(tmp_path, s3_url):
    key_a, key_b = _keys(tmp_path, "a", "b")
    id_a, id_b = load_key_file(key_a).id, load_key_file(key_b).id
    async with backup_fleet(tmp_path / "src", s3_url, ip=f"{NET}.90", key_files=[key_a]) as bf:
        await bf.workload(3, concurrency=8, seed=23)
        marks_a = bf.marks
        await _caught_up(_store(s3_url, key_a), marks_a[-1][1])
        # Rotate: every node restarts with key B (the writer reopens the volume after).
        await bf.writer.close()
        bf.writer = None
        bf.fleet.options["backup_key_files"] = [str(key_b)]
        for name in bf.fleet.nodes:
            bf.fleet.restart(name)
        await fleet_mod.wait_ready(list(bf.fleet.nodes.values()))
        bf.writer = await Writer.open(bf.topology)
        await bf.workload(3, concurrency=8, seed=24)
        marks = marks_a + bf.marks
        both = _store(s3_url, key_b, key_a)
        await _caught_up(both, marks[-1][1])
    ids = _key_ids(both)
    assert set(ids) == {id_a, id_b}, ids
    inv = load_inventory(both)
    assert inv.problems == []
    for t in (marks_a[len(marks_a) // 2][1], marks[-1][1]):  # a point of each key's era
        pages = await asyncio.to_thread(rebuild_volume, both, inv, inv.lsn_for(t))
        check_pages(pages, bf.model, marks, t)
    with pytest.raises(MissingKey, match=f"key id {id_a}.*have {id_b}"):
        load_inventory(_store(s3_url, key_b))
    line = _one_line(await _cli("restore", "--from", s3_url, "--to-time", iso(marks[-1][1]),
                                "--dir", tmp_path / "only-b", "--backup-key-file", key_b,
                                "--base-ip", f"{NET}.130"))
    assert f"key id {id_a}" in line and not (tmp_path / "only-b").exists()
