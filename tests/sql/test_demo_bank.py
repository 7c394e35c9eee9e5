"""The README's demo as a test (issue #11): the bank-transfer invariant through psycopg
with concurrent clients while a storage node, a whole zone, zone+1, the writer instance
(failover by the supervisor) and the replica are SIGKILLed and restored. The total never
changes on the writer or on any replica read, every acknowledged transfer is present
after recovery on both, `PRAGMA integrity_check` is ok, every segment converges.

Addresses: 127.0.0.180-187 (6 nodes, w1, r1)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from tidemark_playground.bank import TOTAL
from tidemark_playground.demo import run_demo
from tidemark_playground.fleet import Fleet

pytestmark = [pytest.mark.sql, pytest.mark.timeout(300)]


async def test_bank_invariant_through_node_zone_zone_plus_one_writer_and_replica_sigkills(tmp_path: Path) -> None:
    directory = tmp_path / "demo"
    result = await run_demo(directory, phase_seconds=3.0, base_ip="127.0.0.180", clients=4,
                            console=Console(highlight=False, soft_wrap=True))
    phases = {p.name: p for p in result.phases}
    # each claim on its own, so a failure names what broke (result.ok is all of them)
    assert not result.wrong_totals, result.wrong_totals[:5]
    for role in ("writer", "replica"):
        check = result.checks[role]
        assert check.error is None, check.error
        assert (check.total, check.missing, check.integrity) == (TOTAL, [], "ok"), check
    assert result.checks["replica"].transfers == result.checks["writer"].transfers  # it caught up
    assert phases["node a1 down"].acked > 0 and phases["zone a down"].acked > 0
    assert phases["zone+1 down"].replica_reads > 0  # writes wait, replica reads go on
    assert result.failover_s is not None and result.failover_s < 10
    assert result.replica_back_s is not None
    assert phases["after failover"].acked > 0 and phases["all restored"].acked > 0
    assert result.converged
    assert result.ok, result.problems
    assert result.acked > 100, result.acked
    fleet = Fleet.load(directory)  # torn down: nothing of it runs on
    assert [n for n in [*fleet.nodes, *fleet.instances] if fleet.state(n) != "dead"] == []
    assert fleet.supervisor_state() == "dead"
    password = (directory / "instance-credentials").read_text().strip().split(":", 1)[1]
    assert password not in json.dumps(result.to_json())


def test_demo_cli_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    for args in (["--clients", "0"], ["--base-ip", "10.0.0.1"]):
        out = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", "demo",
                              "--dir", str(tmp_path / "d"), "--json", *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
        assert "error" in json.loads(out.stdout), out.stdout
    assert not (tmp_path / "d").exists() or not (tmp_path / "d" / "fleet.json").exists()
