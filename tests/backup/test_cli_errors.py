"""The restore client tools answer what a user can fix with one line and exit 1 (a
JSON error object with --json), never a traceback, and never report an empty or
wrong backup target as a healthy one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.backup

UNREACHABLE = "http://127.0.0.1:9"  # discard port on loopback: nothing listens


def tidemark(*args: str, env: dict[str, str] | None = None, drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in drop}
    return subprocess.run([sys.executable, "-m", "tidemark_cli.main", *args], capture_output=True, text=True,
                          timeout=60, env=environ, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("args, says", [
    (["backup", "status", "--from", "gs://bucket/x"], "unsupported backup URL"),
    (["backup", "status", "--from", "s3:///x"], "names no bucket"),
    (["snapshot", "list", "--from", "gs://bucket/x"], "unsupported backup URL"),
    (["restore", "--from", "file:///nonexistent", "--to-time", "yesterday"], "RFC 3339"),
    (["snapshot", "create", "--from", "file:///nonexistent", "--at", "noon"], "RFC 3339"),
])
def test_bad_urls_and_times_get_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    line = one_line_error(tidemark(*args, "--dir", str(tmp_path / "r")) if args[0] == "restore" else tidemark(*args))
    assert says in line, line


def test_an_empty_or_missing_backup_is_an_error_not_all_zeros(tmp_path: Path) -> None:
    line = one_line_error(tidemark("backup", "status", "--from", f"file://{tmp_path}/nothing-here"))
    assert "no Tidemark backup" in line
    result = tidemark("backup", "status", "--from", f"file://{tmp_path}/nothing-here", "--json")
    assert result.returncode == 1
    assert "no Tidemark backup" in json.loads(result.stdout)["error"]
    assert not (tmp_path / "nothing-here").exists(), "a status query created the target"


def test_missing_credentials_and_unreachable_endpoint(tmp_path: Path) -> None:
    no_creds = {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"), "AWS_CONFIG_FILE": str(tmp_path / "none"),
                "AWS_EC2_METADATA_DISABLED": "true"}
    line = one_line_error(tidemark("snapshot", "list", "--from", "s3://b/p", "--endpoint", UNREACHABLE, env=no_creds,
                                   drop=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")))
    assert "credentials" in line.lower(), line
    creds = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}
    line = one_line_error(tidemark("backup", "status", "--from", "s3://b/p", "--endpoint", UNREACHABLE, env=creds))
    assert "127.0.0.1:9" in line or "connect" in line.lower(), line


def test_deleting_a_snapshot_that_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    line = one_line_error(tidemark("snapshot", "delete", "--from", f"file://{tmp_path}/store", "nope"))
    assert "no manual snapshot 'nope'" in line
    result = tidemark("snapshot", "delete", "--from", f"file://{tmp_path}/store", "nope", "--json")
    assert result.returncode == 1 and "nope" in json.loads(result.stdout)["error"]
