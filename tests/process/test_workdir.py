"""`tidemark chaos` and the demo never delete what they did not create (a file placed
in their --dir was once gone), and never empty a directory whose fleet still runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tidemark_playground import fleet as fleet_mod
from tidemark_playground.workdir import MARKER, WorkDirError, fresh_workdir

pytestmark = pytest.mark.process


def test_a_directory_we_did_not_make_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("precious")
    with pytest.raises(WorkDirError, match="not made by a Tidemark run"):
        fresh_workdir(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "precious"
    result = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "chaos", "kill-node", "--dir", str(tmp_path)],
                            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and "not made by a Tidemark run" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "mine.txt").read_text() == "precious"


def test_an_earlier_run_of_ours_is_emptied_absent_and_empty_dirs_are_made(tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path / "new")
    assert (work / MARKER).exists()
    (work / "workload.log").write_text("old run")
    fresh_workdir(work)
    assert sorted(p.name for p in work.iterdir()) == [MARKER]
    (tmp_path / "empty").mkdir()
    assert (fresh_workdir(tmp_path / "empty") / MARKER).exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkDirError, match="is a file"):
        fresh_workdir(tmp_path / "file")


async def test_a_running_fleet_is_never_emptied(tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path / "run")
    fleet, _topology = await fleet_mod.up(work, 2, 1, 16, 4096, "127.0.247.10")
    try:
        with pytest.raises(WorkDirError, match="still running"):
            fresh_workdir(work)
        assert (work / fleet_mod.FLEET_FILE).exists()
    finally:
        fleet.down()
    fresh_workdir(work)  # stopped: ours to empty again
    assert not (work / fleet_mod.FLEET_FILE).exists()
