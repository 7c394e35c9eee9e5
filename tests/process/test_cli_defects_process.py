"""Issue #15's CLI defects that need real processes: `tidemark chaos --json` (it had no
--json) prints its progress on stderr and one JSON summary on stdout, in a work dir it
made; and a second run refuses that dir once a user's file is in it.

Its fleet is on 127.0.254.10-18; every wait is bounded; leftovers are killed."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

pytestmark = [pytest.mark.process, pytest.mark.chaos]


def tidemark(*args: object, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidemark_cli.main", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """At teardown, SIGKILL whatever still runs with the test's directory on its command line."""
    yield
    for proc in psutil.process_iter(["cmdline"]):
        if any(str(tmp_path) in arg for arg in proc.info["cmdline"] or []):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


@pytest.mark.timeout(420)
def test_chaos_json_summary_and_a_users_file_in_its_dir(tmp_path: Path) -> None:
    work = tmp_path / "chaos"
    result = tidemark("chaos", "pause-node", "--dir", work, "--base-ip", "127.0.254.10", "--json", timeout=400)
    assert result.returncode == 0, (result.stdout[-2000:], result.stderr[-4000:])
    summary = json.loads(result.stdout)  # the whole of stdout: progress went to stderr
    assert summary["experiment"] == "pause-node" and summary["ok"] is True and summary["healed"] is True, summary
    assert summary["acked"] > 0 and summary["lost"] == 0, summary
    assert any(e["kind"] == "fault" and "b2" in e["text"] for e in summary["events"]), summary["events"]
    assert "pause node b2" in result.stderr
    (work / "notes.txt").write_text("mine")
    again = tidemark("chaos", "pause-node", "--dir", work, "--base-ip", "127.0.254.10", "--json", timeout=60)
    # everything else in it is what a run writes (its fleet, logs, workload.log): only notes.txt is named
    assert again.returncode == 1 and "wrote (notes.txt)" in json.loads(again.stdout)["error"], again.stdout
    assert (work / "notes.txt").read_text() == "mine" and (work / "fleet.json").exists()
