"""Issue #15's CLI defects, each as it was met (every test here failed before its fix):
user errors of any command are one line and exit 1 (a JSON error object with --json),
a work dir of an earlier run is emptied only of what such a run writes, a pid without a
recorded start time is signalled only if it runs a tidemark command, a bad --backup URL
is refused before anything starts, and an S3 server without conditional writes is said
loudly (log and status), never silently.

No fleet starts here: every command fails before it would start one (bounded by the
pytest timeout below); the one helper process is a `sleep` that is always killed."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from botocore.stub import ANY, Stubber
from click.testing import CliRunner, Result

from tidemark_backup import layout
from tidemark_backup import objstore as objstore_mod
from tidemark_backup.objstore import S3Store, StoreError, check_url
from tidemark_cli.main import main
from tidemark_node.uploader_state import UploaderStatus
from tidemark_playground import fleet as fleet_mod
from tidemark_playground.status import problems
from tidemark_playground.workdir import MARKER, WORKLOAD_LOG, WorkDirError, fresh_workdir

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def tidemark(*args: object) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line_error(result: Result, exit_code: int = 1) -> str:
    """Exit EXIT_CODE, no exception escaped (no traceback), one line on stderr."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def json_error(result: Result) -> str:
    """With --json: the one line on stderr and {"error": …} (only that) on stdout."""
    line = one_line_error(result)
    body = json.loads(result.stdout)
    assert list(body) == ["error"] and line == f"Error: {body['error']}", (body, line)
    return body["error"]


# -- 3. domain errors: one line, exit 1, JSON with --json -----------------------------------
def test_a_missing_dir_of_workload_and_sql_serve_is_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    assert "topology.json not found" in one_line_error(tidemark("workload", "--seconds", 1, "--dir", missing))
    assert "topology.json not found" in json_error(tidemark("workload", "--seconds", 1, "--dir", missing, "--json"))
    (tmp_path / "credentials").write_text("tidemark:secret\n")
    serve = tidemark("sql", "serve", "--dir", missing, "--password-file", tmp_path / "credentials")
    assert "topology.json not found" in one_line_error(serve)
    assert not missing.exists()


@pytest.mark.parametrize("base_ip, says", [("10.0.0.1", "loopback"), ("127.0.253.300", "not an IPv4"),
                                           ("127.0.253.250", "must fit")])
def test_chaos_refuses_a_bad_base_ip_before_making_its_dir(tmp_path: Path, base_ip: str, says: str) -> None:
    work = tmp_path / "chaos"
    assert says in json_error(tidemark("chaos", "pause-node", "--dir", work, "--base-ip", base_ip, "--json"))
    assert says in one_line_error(tidemark("chaos", "pause-node", "--dir", work, "--base-ip", base_ip))
    assert not work.exists()


def test_restore_checks_its_options_before_reading_the_backup(tmp_path: Path) -> None:
    store = f"file://{tmp_path}/store"  # empty: reading it first said "no PG manifest" instead
    args = ["restore", "--from", store, "--to-time", "2026-01-01T00:00:00Z", "--dir", tmp_path / "r"]
    assert "not an IPv4 address" in json_error(tidemark(*args, "--base-ip", "bad", "--json"))
    assert "must be a loopback" in one_line_error(tidemark(*args, "--base-ip", "10.1.2.3"))
    assert "unsupported backup URL" in one_line_error(tidemark(*args, "--backup", "gs://b/p"))
    assert not (tmp_path / "r").exists()


def test_a_duplicate_snapshot_name_is_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "store" / layout.ROOT / layout.manual_manifest_key("nightly")
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"name": "nightly"}))
    args = ["snapshot", "create", "--from", f"file://{tmp_path}/store", "--name", "nightly"]
    assert "manual snapshot 'nightly' already exists" in one_line_error(tidemark(*args))
    assert "already exists" in json_error(tidemark(*args, "--json"))
    assert manifest.read_text() == json.dumps({"name": "nightly"})


def test_a_usage_error_with_json_also_gives_a_json_error() -> None:
    result = tidemark("playground", "up", "--pgs", "abc", "--json")
    assert result.exit_code == 2 and "'abc' is not a valid integer" in json.loads(result.stdout)["error"]
    assert "Traceback" not in result.stderr


# -- 2. a bad --backup URL is refused before anything starts ----------------------------------
@pytest.mark.parametrize("url, says", [("gs://b/p", "unsupported backup URL"), ("s3:///p", "names no bucket"),
                                       ("file://", "unsupported backup URL")])
def test_up_refuses_a_bad_backup_url_before_starting_anything(tmp_path: Path, url: str, says: str) -> None:
    with pytest.raises(StoreError, match=says):
        check_url(url)
    directory = tmp_path / "pg"
    error = json_error(tidemark("playground", "up", "--dir", directory, "--backup", url, "--base-ip", "127.0.253.10",
                                "--instances", "0", "--no-repair", "--json"))
    assert says in error and not directory.exists(), error  # no node was started: not even the dir


# -- 1. a work dir of ours is emptied only of what a run of ours writes -----------------------
def test_a_file_placed_in_an_earlier_runs_dir_is_kept_and_refused(tmp_path: Path) -> None:
    work = fresh_workdir(tmp_path / "run")
    (work / WORKLOAD_LOG).write_text("an earlier run's")
    (work / "logs").mkdir()
    (work / "notes.txt").write_text("precious")  # the user's, placed after the run
    with pytest.raises(WorkDirError, match=r"holds what no Tidemark run wrote \(notes.txt\)"):
        fresh_workdir(work)
    assert (work / "notes.txt").read_text() == "precious" and (work / MARKER).exists()
    (work / "notes.txt").unlink()
    fresh_workdir(work)  # only what runs write: emptied
    assert sorted(p.name for p in work.iterdir()) == [MARKER]


# -- 2. a pid without a recorded start time is ours only if it runs tidemark ------------------
@pytest.fixture
def stranger() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait(10)


def test_kill_leaves_a_stranger_alone_when_no_start_time_was_recorded(tmp_path: Path, stranger) -> None:
    fleet = fleet_mod.Fleet(tmp_path)
    # fleet.json of an older version (no start_time) whose node died and whose pid was reused
    fleet.nodes["a1"] = fleet_mod.NodeProc("a1", "a", "127.0.253.10", 1, pid=stranger.pid)
    assert fleet.state("a1") == "dead"
    assert fleet.kill("a1") is False
    fleet.pause("a1")
    fleet.options.update(supervisor_pid=stranger.pid)  # the supervisor's pid likewise
    assert fleet.stop_supervisor() is False
    assert fleet.down() == []
    assert stranger.poll() is None, "a process that is not ours was signalled"
    assert fleet_mod.pid_state(stranger.pid) == "running"  # the pid alone: it does run


def test_a_tidemark_process_without_a_start_time_is_still_ours(tmp_path: Path) -> None:
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "tidemark_cli.main"])
    try:
        deadline = time.monotonic() + 10
        while "tidemark_cli.main" not in psutil.Process(ours.pid).cmdline() and time.monotonic() < deadline:
            time.sleep(0.01)  # until the child has exec'd: before, it is a copy of pytest
        fleet = fleet_mod.Fleet(tmp_path)
        fleet.nodes["a1"] = fleet_mod.NodeProc("a1", "a", "127.0.253.10", 1, pid=ours.pid)
        assert fleet.state("a1") == "running"
        assert fleet.kill("a1") is True
        # -9, or 0 when kill_pid reaped its child before Popen could (Popen then sees ECHILD);
        # it sleeps for 60 s, so 0 cannot be a normal exit here
        assert ours.wait(10) in (-9, 0)
    finally:
        ours.kill()
        ours.wait(10)


def test_a_clock_step_does_not_make_a_live_process_look_reused(monkeypatch) -> None:
    # A fake, named as such: stepping this machine's clock is not ours to do. psutil's
    # create_time adds the boot time as the wall clock has it now; a step of a few seconds
    # (NTP on a CI machine) made the supervisor see a live writer as dead and start a
    # second one, which fenced it (CI run of stop 23, test_demo_bank).
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks, wall = fleet_mod.start_ticks_of(proc.pid), psutil.Process(proc.pid).create_time()
        assert fleet_mod.pid_state(proc.pid, ticks) == "running"
        assert fleet_mod.pid_state(proc.pid, ticks + 1) == "dead"  # another start: a reused pid
        booted = psutil.boot_time()
        monkeypatch.setattr(psutil._pslinux, "boot_time", lambda: booted + 5.0)  # the clock stepped 5 s
        assert fleet_mod.pid_state(proc.pid, ticks) == "running"
        assert fleet_mod.pid_state(proc.pid, None, start_time=wall) == "dead"  # what the wall-clock start said
        # fleet.json of an older version recorded the wall-clock start: still compared
        monkeypatch.undo()
        assert fleet_mod.pid_state(proc.pid, None, start_time=wall) == "running"
        assert fleet_mod.pid_state(proc.pid, None, start_time=wall - 5.0) == "dead"
    finally:
        proc.kill()
        proc.wait(10)


# -- 4. no silent fallback to unconditional S3 puts -------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict]] = []

    def warning(self, event: str, **kw: object) -> None:
        self.warnings.append((event, kw))


def test_an_s3_server_without_conditional_writes_is_said_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(objstore_mod, "log", recorder)
    store = S3Store("s3://b/p", "b", "p", "http://127.0.253.1:9", "key", "secret")
    stub = Stubber(store.client)
    stub.add_client_error("put_object", service_error_code="NotImplemented", http_status_code=501,
                          expected_params={"Bucket": "b", "Key": ANY, "Body": ANY, "IfNoneMatch": "*"})
    for _ in range(2):  # the retry, then the next put: unconditional
        stub.add_response("put_object", {}, expected_params={"Bucket": "b", "Key": ANY, "Body": ANY})
    assert store.conditional_puts is True
    with stub:
        store.put("marks/1", b"x")
        store.put("marks/2", b"y")
    stub.assert_no_pending_responses()
    assert store.conditional_puts is False
    assert [event for event, _ in recorder.warnings] == ["s3_conditional_puts_unsupported"]
    assert "overwrite" in str(recorder.warnings[0][1]["consequence"])


def test_status_says_a_node_backs_up_with_unconditional_puts() -> None:
    status = UploaderStatus(conditional_puts=False).to_json()
    assert status["conditionalPuts"] is False  # the node's /v1/status "backup"
    fleet = {"nodes": [{"name": "a1", "alive": True, "backup_conditional_puts": False},
                       {"name": "a2", "alive": True, "backup_conditional_puts": None}], "pgs": []}
    assert problems(fleet) == ["node a1: its backup store lacks conditional writes (puts may overwrite objects)"]


def test_a_bad_node_token_or_ca_file_of_workload_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--from-cluster with a mounted token directory or CA file that holds no usable
    token or certificate: one line naming it, before any API server is asked."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    run = ("workload", "--seconds", 1, "--from-cluster", "demo", "--node-tokens-dir", tokens)
    assert "no node token" in one_line_error(tidemark(*run))
    (tokens / "writer.token").write_text("garbage\n")
    said = json_error(tidemark(*run, "--json"))
    assert str(tokens) in said and "not a node token" in said
    (tokens / "writer.token").write_text("writer." + "ab" * 32 + "\n")
    (tmp_path / "ca.crt").write_text("not a certificate\n")
    assert "ca.crt" in one_line_error(tidemark(*run, "--node-ca-file", tmp_path / "ca.crt"))
