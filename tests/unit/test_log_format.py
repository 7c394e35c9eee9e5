"""`tidemark --log-format auto|json|text` and `--log-level` (also TIDEMARK_LOG_FORMAT and
TIDEMARK_LOG_LEVEL), and the same options of `kubectl tidemark`: auto is readable text
when stderr is a terminal (a real pty here) and JSON lines when it is not; json and text
choose one whatever stderr is."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.unit

# The group's options as a user passes them, a subcommand's --help (so the group's own
# callback runs), then one warning logged through structlog as every component does.
PROBE = """
import sys, structlog, importlib
module, attr = sys.argv[1].split(':')
group = getattr(importlib.import_module(module), attr)
group(sys.argv[2:] + ['backup', '--help'], standalone_mode=False)
structlog.get_logger('probe').warning('probe_event', answer=42)
"""
TIDEMARK = "tidemark_cli.main:main"
PLUGIN = "tidemark_cli.kubectl_plugin:plugin"


def _stderr(group: str, *args: str, tty: bool, env: dict[str, str] | None = None) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TIDEMARK_LOG_")} | (env or {})
    cmd = [sys.executable, "-c", PROBE, group, *args]
    if not tty:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=environ)
        assert done.returncode == 0, done.stderr
        return done.stderr
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=slave, env=environ)
    os.close(slave)
    try:
        chunks = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # bounded: a hung child fails the test
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=5) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return b"".join(chunks).decode()


def _probe_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if "probe_event" in line]
    assert len(lines) == 1, stderr
    return lines[0]


def _is_json(line: str) -> bool:
    try:
        doc = json.loads(line)
    except ValueError:
        return False
    assert doc["event"] == "probe_event" and doc["answer"] == 42 and doc["level"] == "warning"
    return True


@pytest.mark.parametrize("group", [TIDEMARK, PLUGIN])
def test_auto_is_text_on_a_terminal_and_json_otherwise(group: str) -> None:
    on_tty = _probe_line(_stderr(group, tty=True))
    assert not _is_json(on_tty) and "answer=42" in on_tty
    assert _is_json(_probe_line(_stderr(group, tty=False)))


def test_json_and_text_are_chosen_whatever_stderr_is() -> None:
    assert _is_json(_probe_line(_stderr(TIDEMARK, "--log-format", "json", tty=True)))
    as_text = _probe_line(_stderr(TIDEMARK, "--log-format", "text", tty=False))
    assert not _is_json(as_text) and "answer=42" in as_text
    assert _is_json(_probe_line(_stderr(TIDEMARK, tty=True, env={"TIDEMARK_LOG_FORMAT": "json"})))


def test_log_level_filters_and_a_bad_value_is_a_usage_error() -> None:
    assert "probe_event" not in _stderr(TIDEMARK, "--log-level", "error", tty=False)
    assert "probe_event" not in _stderr(PLUGIN, tty=False, env={"TIDEMARK_LOG_LEVEL": "ERROR"})
    bad = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "--log-format", "xml", "backup", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--log-format" in bad.stderr and "Traceback" not in bad.stderr
