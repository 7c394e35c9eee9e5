"""The pod runner's Secret volumes, written as the kubelet's AtomicWriter does (no cluster):
entries are symlinks through `..data`, an update is one rename (never half old, half new),
an unchanged payload writes nothing, modes are kept, removed entries and old payloads go."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tidemark_rig.pod_runner import DATA_LINK, PodRunner, Running, write_volume

pytestmark = pytest.mark.unit


def _dirs(target: Path) -> list[str]:
    return sorted(p.name for p in target.iterdir() if p.name.startswith("..") and p.name != DATA_LINK)


def test_first_write_lays_out_data_link_and_entries(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "tls"
    assert write_volume(target, {"tls.crt": (b"cert-1", 0o400), "tls.key": (b"key-1", 0o400),
                                 "sub/x.txt": (b"x", 0o440)})
    assert (target / DATA_LINK).is_symlink()
    assert os.readlink(target / "tls.crt") == f"{DATA_LINK}/tls.crt"
    assert os.readlink(target / "sub") == f"{DATA_LINK}/sub"
    assert (target / "tls.crt").read_bytes() == b"cert-1" and (target / "sub" / "x.txt").read_bytes() == b"x"
    assert (target / "tls.key").stat().st_mode & 0o777 == 0o400
    assert (target / "sub" / "x.txt").stat().st_mode & 0o777 == 0o440
    assert len(_dirs(target)) == 1


def test_unchanged_payload_writes_nothing(tmp_path: Path) -> None:
    payload = {"tls.crt": (b"cert-1", 0o400)}
    assert write_volume(tmp_path, payload)
    before = os.readlink(tmp_path / DATA_LINK), (tmp_path / "tls.crt").stat().st_mtime_ns
    assert not write_volume(tmp_path, dict(payload))
    assert (os.readlink(tmp_path / DATA_LINK), (tmp_path / "tls.crt").stat().st_mtime_ns) == before
    # a mode change alone is a change
    assert write_volume(tmp_path, {"tls.crt": (b"cert-1", 0o440)})
    assert (tmp_path / "tls.crt").stat().st_mode & 0o777 == 0o440


def test_update_swaps_all_files_at_once_and_cleans_up(tmp_path: Path) -> None:
    write_volume(tmp_path, {"tls.crt": (b"cert-1", 0o400), "tls.key": (b"key-1", 0o400),
                            "old.txt": (b"gone soon", 0o400)})
    old_dir = os.readlink(tmp_path / DATA_LINK)
    # a reader that opened the old files keeps reading the old pair; a new open sees the new
    held = (tmp_path / "tls.key").open("rb")
    assert write_volume(tmp_path, {"tls.crt": (b"cert-2", 0o400), "tls.key": (b"key-2", 0o400)})
    assert held.read() == b"key-1"
    held.close()
    assert os.readlink(tmp_path / DATA_LINK) != old_dir and not (tmp_path / old_dir).exists()
    assert (tmp_path / "tls.crt").read_bytes() == b"cert-2" and (tmp_path / "tls.key").read_bytes() == b"key-2"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("..")) == ["tls.crt", "tls.key"]
    assert len(_dirs(tmp_path)) == 1 and not (tmp_path / (DATA_LINK + "_tmp")).exists()


def test_plain_files_of_an_older_layout_are_replaced(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_bytes(b"plain")
    (tmp_path / "tls.crt").chmod(0o400)
    assert write_volume(tmp_path, {"tls.crt": (b"cert-1", 0o400)})
    assert (tmp_path / "tls.crt").is_symlink() and (tmp_path / "tls.crt").read_bytes() == b"cert-1"


class _Core:
    """read_namespaced_secret of a fake API: the Secret's current data; reads counted."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data, self.reads = data, 0

    def read_namespaced_secret(self, name: str, namespace: str, _request_timeout: float = 0) -> object:
        self.reads += 1
        return type("Secret", (), {"data": dict(self.data)})()


def test_refresh_rewrites_running_pods_volumes_when_the_secret_changes(tmp_path: Path) -> None:
    def b64(s: bytes) -> str:
        return base64.b64encode(s).decode()

    core = _Core({"tls.crt": b64(b"cert-1"), "tls.key": b64(b"key-1"), "ca.key": b64(b"never mounted")})
    runner = PodRunner(core, tmp_path / "rig")
    pods = {}
    for i in range(2):  # two pods mounting the same Secret: one read per refresh round
        pod = {"metadata": {"uid": f"u{i}", "namespace": "ns", "name": f"p{i}"},
               "spec": {"volumes": [{"name": "tls", "secret": {"secretName": "s", "defaultMode": 0o400, "items": [
                   {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]}}],
                   "containers": [{"volumeMounts": [{"name": "tls", "mountPath": "/etc/tls"}]}]}}
        r = Running(f"u{i}", "ns", f"p{i}", "node", "127.0.0.1", [], popen=object())  # type: ignore[arg-type]
        r.cwd = tmp_path / f"p{i}"
        runner.running[r.uid] = r
        pods[r.uid] = pod
    runner.refresh_volumes(pods)
    assert core.reads == 1
    mounted = tmp_path / "p1" / "etc" / "tls"
    assert sorted(p.name for p in mounted.iterdir() if not p.name.startswith("..")) == ["tls.crt", "tls.key"]
    stamp = os.readlink(mounted / DATA_LINK)
    runner.refresh_volumes(pods)  # unchanged: nothing rewritten
    assert os.readlink(mounted / DATA_LINK) == stamp
    core.data.update({"tls.crt": b64(b"cert-2"), "tls.key": b64(b"key-2")})
    runner.refresh_volumes(pods)
    for i in range(2):
        d = tmp_path / f"p{i}" / "etc" / "tls"
        assert (d / "tls.crt").read_bytes() == b"cert-2" and (d / "tls.key").read_bytes() == b"key-2"
        assert (d / "tls.key").stat().st_mode & 0o777 == 0o400
    runner.running["u0"].popen = None  # a pod whose process is not running is left alone
    core.data["tls.crt"] = b64(b"cert-3")
    runner.refresh_volumes(pods)
    assert (tmp_path / "p0" / "etc" / "tls" / "tls.crt").read_bytes() == b"cert-2"
    assert (tmp_path / "p1" / "etc" / "tls" / "tls.crt").read_bytes() == b"cert-3"
