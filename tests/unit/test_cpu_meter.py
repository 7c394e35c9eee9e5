"""The benches' CPU accounting (cli/tidemark_cli/cpu_meter.py) on real processes: a busy
child counts while it runs and after it has exited and been reaped (as a postmaster's
backends do), an idle one barely counts, and a gone pid counts nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tidemark_cli.cpu_meter import CpuMeter, tree_cpu_seconds

pytestmark = pytest.mark.unit

BURN = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def test_a_reaped_child_counts_in_its_parents_tree() -> None:
    # the parent starts a burning child when told, waits for it (reaping it), says so
    code = (f"import subprocess, sys\nsys.stdin.readline()\nsubprocess.run([sys.executable, '-c', {BURN!r}])\n"
            "print('done', flush=True)\nsys.stdin.read()\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        with CpuMeter({"tree": [parent.pid]}) as cpu:
            parent.stdin.write("go\n")
            parent.stdin.flush()
            assert parent.stdout.readline().strip() == "done"
        per = cpu.per_txn_ms(1)
        assert per is not None
        assert 350 <= per["tree"] <= 3000, per  # the child's 400 ms, plus its interpreter start-up
        assert per["total"] == per["tree"]
        assert per["machine"] >= per["tree"] * 0.8  # the machine saw at least that
    finally:
        parent.kill()
        parent.wait()


def test_an_idle_process_and_a_gone_pid() -> None:
    idle = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tree_cpu_seconds(idle.pid)
        with CpuMeter({"idle": [idle.pid], "gone": [2**22 + 12345]}) as cpu:
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        per = cpu.per_txn_ms(10)
        assert per is not None and per["gone"] == 0 and per["idle"] < 5, per
        assert cpu.per_txn_ms(0) is None  # no transactions: no figure, not a division by zero
    finally:
        idle.kill()
        idle.wait()
