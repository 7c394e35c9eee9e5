"""`tidemark playground` as a user meets it (issue #15): bad options are refused before
anything starts, a failed `up` leaves nothing running, `down`/`kill` never signal a pid
that is no longer ours, `status` exits 1 when the fleet is degraded, the fault commands
and `down` speak JSON, the demo has its own directory, and a missing --dir is one line.

Every fleet here is storage only (`--instances 0 --no-repair`) on its own 127.0.248-252.x
range; every wait is bounded; leftovers are killed by their command line."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from tidemark_playground import fleet as fleet_mod

pytestmark = pytest.mark.process

NODES = ["a1", "a2", "b1", "b2", "c1", "c2"]


def tm(*args: object, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL)


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit 1 and said why in one line, no traceback."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


def processes_in(directory: Path) -> list[psutil.Process]:
    """Live processes whose command line names DIRECTORY (nodes: --data DIR/data/NAME) or
    that run in it (a relative --dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd", "status"]):
        named = any(str(directory) in a for a in proc.info["cmdline"] or [])
        inside = (proc.info["cwd"] or "").startswith(str(directory))
        if proc.info["status"] != psutil.STATUS_ZOMBIE and (named or inside):
            found.append(proc)
    return found


def edit_fleet_json(directory: Path, change: Callable[[dict], None]) -> None:
    path = directory / "fleet.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.fixture(autouse=True)
def no_leftovers(tmp_path: Path) -> Iterator[None]:
    """At teardown, SIGKILL whatever still runs from the test's directory (a failed test,
    or a node a test hid from fleet.json)."""
    yield
    for proc in processes_in(tmp_path):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()


@pytest.fixture
def start_fleet(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """`start_fleet(base_ip)` runs `up` in a fresh directory; `down` at teardown."""
    made: list[Path] = []

    def start(base_ip: str) -> Path:
        directory = tmp_path / f"fleet{len(made)}"
        made.append(directory)
        result = tm("up", "--dir", directory, "--base-ip", base_ip, "--instances", "0", "--no-repair", "--json")
        assert result.returncode == 0, result.stderr[-3000:]
        return directory

    yield start
    for directory in made:
        if (directory / "fleet.json").exists():
            tm("down", "--dir", directory, timeout=60)


def wait_status(directory: Path, returncode: int, timeout: float = 30.0) -> dict:
    """`status --json` until it exits with RETURNCODE (bounded); its JSON."""
    deadline = time.monotonic() + timeout
    while True:
        result = tm("status", "--dir", directory, "--json")
        if result.returncode == returncode or time.monotonic() > deadline:
            assert result.returncode == returncode, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
            return json.loads(result.stdout)
        time.sleep(0.5)


# -- 1. `up` checks everything before starting anything ------------------------------------
@pytest.mark.parametrize("bad", [
    ["--pgs", "0", "--base-ip", "127.0.248.10"],
    ["--pgs", "-1", "--base-ip", "127.0.248.10"],
    ["--nodes-per-zone", "1", "--base-ip", "127.0.248.10"],
    ["--base-ip", "10.0.0.1"],
    ["--base-ip", "127.0.0.300"],
    ["--base-ip", "127.0.248.250"],  # the 7th address would be past .254
])  # fmt: skip
def test_up_refuses_bad_options_before_starting_anything(tmp_path: Path, bad: list[str]) -> None:
    for _attempt in range(2):  # re-running once left six nodes running
        line = one_line_error(tm("up", *bad, "--instances", "0", "--no-repair", cwd=tmp_path))
        assert line.startswith("Error: " + bad[0]), line
        assert not (tmp_path / ".tidemark-playground").exists()  # no fleet.json, not even the directory
        assert processes_in(tmp_path) == []


@pytest.mark.parametrize("fleet", ["new", "existing"])
def test_up_that_fails_after_starting_stops_what_it_started(tmp_path: Path, start_fleet, fleet: str) -> None:
    if fleet == "new":
        directory = tmp_path / "pg"
        (directory / "data").mkdir(parents=True)
    else:
        directory = start_fleet("127.0.249.10")
        assert tm("down", "--dir", directory).returncode == 0
        shutil.rmtree(directory / "data" / "c2")
    (directory / "data" / "c2").write_text("in the way")  # the last node's data dir cannot be made
    line = one_line_error(tm("up", "--dir", directory, "--base-ip", "127.0.249.10", "--instances", "0", "--no-repair"))
    assert "c2" in line, line
    assert processes_in(directory) == []  # a1..c1 had been started: stopped again
    assert (directory / "fleet.json").exists() == (fleet == "existing")  # a half-made new fleet is forgotten
    if fleet == "new":  # and a re-run starts afresh
        (directory / "data" / "c2").unlink()
        again = tm("up", "--dir", directory, "--base-ip", "127.0.249.10", "--instances", "0", "--no-repair", "--json")
        try:
            assert again.returncode == 0, again.stderr[-3000:]
            assert {n["name"] for n in json.loads(again.stdout)["nodes"] if n["alive"]} == set(NODES)
        finally:
            tm("down", "--dir", directory, timeout=60)
        assert processes_in(directory) == []


# -- 2. a pid is ours only while its process start time is the one recorded ----------------
def test_kill_and_down_leave_a_reused_pid_alone(start_fleet) -> None:
    directory = start_fleet("127.0.250.10")
    nodes = json.loads((directory / "fleet.json").read_text())["nodes"]
    assert all(n["start_ticks"] == fleet_mod.start_ticks_of(n["pid"]) for n in nodes), nodes
    time.sleep(0.05)  # a start a1 never had (ticks are 10 ms)
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        # a1's pid now belongs to another process (as after a1 died and the pid was reused)
        edit_fleet_json(directory, lambda data: data["nodes"][0].update(pid=stranger.pid))
        kill = tm("kill", "a1", "--dir", directory, "--json")
        assert kill.returncode == 0, kill.stderr[-2000:]
        assert json.loads(kill.stdout) == {"name": "a1", "action": "kill", "state": "dead"}
        down = tm("down", "--dir", directory, "--json")
        assert down.returncode == 0, down.stderr[-2000:]
        assert sorted(json.loads(down.stdout)["stopped"]) == NODES[1:]
        assert stranger.poll() is None, "a process that is not ours was signalled"
    finally:
        stranger.kill()
        stranger.wait(10)


def test_a_fleet_json_without_start_times_still_works(start_fleet) -> None:
    directory = start_fleet("127.0.250.60")

    def strip(data: dict) -> None:  # as written by a version that did not record them
        for node in data["nodes"]:
            del node["start_ticks"], node["start_time"]

    edit_fleet_json(directory, strip)
    assert wait_status(directory, 0)["healthy"] is True
    down = tm("down", "--dir", directory, "--json")
    assert down.returncode == 0 and sorted(json.loads(down.stdout)["stopped"]) == NODES, down.stderr[-2000:]
    assert processes_in(directory) == []


# -- 3. status exits 1 when the fleet is degraded ------------------------------------------
def test_status_exits_1_when_the_fleet_is_degraded(start_fleet) -> None:
    directory = start_fleet("127.0.251.10")
    healthy = wait_status(directory, 0)
    assert healthy["healthy"] is True and healthy["problems"] == []
    assert tm("kill", "b2", "--dir", directory).returncode == 0
    degraded = wait_status(directory, 1)  # still the whole status, as JSON
    assert degraded["healthy"] is False and "node b2 down" in degraded["problems"], degraded["problems"]
    assert {n["name"] for n in degraded["nodes"]} == set(NODES)
    assert any(p["healthy_segments"] < 6 for p in degraded["pgs"])
    table = tm("status", "--dir", directory)
    assert table.returncode == 1 and "degraded: node b2 down" in table.stdout, table.stdout[-2000:]
    assert "exit" in tm("status", "--help").stdout.lower()


# -- 4. --json on the fault commands and down ----------------------------------------------
def test_fault_commands_and_down_speak_json(start_fleet) -> None:
    directory = start_fleet("127.0.251.60")
    for action, state in (("pause", "paused"), ("resume", "running"), ("kill", "dead"), ("restart", "running")):
        result = tm(action, "a2", "--dir", directory, "--json")
        assert result.returncode == 0, result.stderr[-2000:]
        assert json.loads(result.stdout) == {"name": "a2", "action": action, "state": state}
    unknown = tm("kill", "zz", "--dir", directory, "--json")
    assert unknown.returncode == 1 and "unknown node" in json.loads(unknown.stdout)["error"]
    down = tm("down", "--dir", directory, "--json")
    assert down.returncode == 0, down.stderr[-2000:]
    body = json.loads(down.stdout)
    assert body["dir"] == str(directory) and sorted(body["stopped"]) == NODES, body


# -- 5. the demo never shares `up`'s directory ---------------------------------------------
def test_the_demo_has_its_own_default_directory(tmp_path: Path) -> None:
    (tmp_path / ".tidemark-playground").mkdir()
    (tmp_path / ".tidemark-playground" / "fleet.json").write_text("{}")  # stands for a running fleet
    (tmp_path / ".tidemark-demo").mkdir()
    (tmp_path / ".tidemark-demo" / "mine.txt").write_text("not the demo's")  # so it stops at once
    line = one_line_error(tm("demo", cwd=tmp_path, timeout=60))
    assert ".tidemark-demo is not empty" in line, line
    assert (tmp_path / ".tidemark-playground" / "fleet.json").read_text() == "{}"
    assert processes_in(tmp_path) == []


# -- 6. no fleet in --dir: one line, exit 1 ------------------------------------------------
@pytest.mark.parametrize("command", [["status"], ["kill", "a1"], ["pause", "a1"], ["resume", "a1"],
                                     ["restart", "w1"], ["down"], ["supervise"]])
def test_a_missing_dir_is_one_line_and_exit_1(tmp_path: Path, command: list[str]) -> None:
    missing = tmp_path / "nowhere"
    line = one_line_error(tm(*command, "--dir", missing, timeout=30))
    assert f"no playground in {missing}" in line, line
    if command != ["supervise"]:
        result = tm(*command, "--dir", missing, "--json")
        assert result.returncode == 1 and "no playground in" in json.loads(result.stdout)["error"], result.stdout
    assert not missing.exists()


def test_purge_deletes_only_what_the_fleet_wrote(tmp_path: Path) -> None:
    """`down --purge` once deleted the whole --dir, a user's own files included."""
    directory = tmp_path / "pg"
    directory.mkdir()
    (directory / "notes.txt").write_text("mine")
    up = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", "up", "--dir", str(directory),
                         "--base-ip", "127.0.252.100", "--instances", "0", "--no-repair", "--json"],
                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert up.returncode == 0, up.stderr[-2000:]
    down = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", "down", "--dir", str(directory),
                           "--purge", "--json"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["left"] == ["notes.txt"]
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]
    assert (directory / "notes.txt").read_text() == "mine"
