"""The writer instance in the playground, through the CLI as a user runs it (replicas:
test_replica_playground.py): `playground up --instances 1`, psycopg on the dsn + password file, `kill`/`restart w1`,
`status --json`, `down`, and the supervisor restarting a killed writer.

Addresses: 127.0.243-245.x (no other suite uses them)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from conftest import all_pids, tm

from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch
from tidemark_compute.writer import Writer
from tidemark_playground.fleet import Fleet, pid_state

pytestmark = [pytest.mark.sql, pytest.mark.timeout(240)]


def status(directory: Path) -> dict:
    result = tm("status", "--dir", str(directory), "--json", timeout=60)
    assert result.returncode in (0, 1), result.stderr  # 1: degraded, as some of these tests make it
    data = json.loads(result.stdout)
    assert result.returncode == (0 if data["healthy"] else 1), data["problems"]
    return data


def password_of(instance: dict) -> str:
    return Path(instance["password_file"]).read_text().strip().split(":", 1)[1]


def connect(instance: dict, timeout: int = 5) -> psycopg.Connection:
    return psycopg.connect(instance["dsn"], password=password_of(instance), autocommit=True,
                           connect_timeout=timeout)


def test_writer_instance_up_kill_restart_status_down(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.243.10", "--instances", "1", "--no-repair", "--json")
    assert up.returncode == 0, up.stderr[-2000:]
    (inst,) = json.loads(up.stdout)["instances"]
    assert inst["name"] == "w1" and inst["role"] == "writer" and inst["alive"] and inst["lag_ms"] == 0
    assert inst["dsn"].startswith("postgresql://tidemark@127.0.243.") and inst["dsn"].endswith("/tidemark")
    password = password_of(inst)
    assert stat.S_IMODE(os.stat(inst["password_file"]).st_mode) == 0o600
    assert password not in up.stdout + up.stderr + inst["dsn"]  # --json: only the file's path
    for log in (playground_dir / "logs").iterdir():
        assert password not in log.read_text(errors="replace"), log

    conn = connect(inst)
    conn.execute("CREATE TABLE acc (id INTEGER PRIMARY KEY, bal INTEGER NOT NULL)")
    with conn.transaction():
        conn.cursor().executemany("INSERT INTO acc VALUES (%s, %s)", [(i, 100) for i in range(1, 51)])
    conn.execute("UPDATE acc SET bal = bal + 1 WHERE id = 7")  # acknowledged: must survive the kill
    # The raw page workload would fence the SQL writer and overwrite its pages: refused.
    raw = subprocess.run([sys.executable, "-m", "tidemark_cli.main", "workload", "--dir", d, "--seconds", "1"],
                         capture_output=True, text=True, timeout=60)
    assert raw.returncode == 1 and "holds a database" in raw.stderr and "Traceback" not in raw.stderr, raw.stderr
    assert conn.execute("SELECT count(*) FROM acc").fetchone() == (50,)  # w1 still serves

    killed = tm("kill", "w1", "--dir", d)
    assert killed.returncode == 0, killed.stderr
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with pytest.raises(psycopg.OperationalError):
        connect(inst, timeout=2).close()
    (down_inst,) = status(playground_dir)["instances"]
    assert down_inst["alive"] is False and down_inst["process"] == "dead"

    restarted = tm("restart", "w1", "--dir", d)
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    (again,) = status(playground_dir)["instances"]
    assert again["alive"] is True and again["process"] == "running" and again["dsn"] == inst["dsn"]
    with connect(again) as conn:
        assert conn.execute("SELECT count(*), sum(bal) FROM acc").fetchone() == (50, 5001)
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.execute("INSERT INTO acc VALUES (51, 0)")  # the new writer takes writes

    pids = all_pids(playground_dir)
    assert all(pid_state(p) == "running" for p in pids if p)
    down = tm("down", "--dir", d, timeout=60)
    assert down.returncode == 0, down.stderr
    assert [p for p in pids if pid_state(p) != "dead"] == []

    again = tm("up", "--dir", d, "--json")  # an existing fleet: its dead nodes and instance come back
    assert again.returncode == 0, again.stderr[-2000:]
    (back,) = json.loads(again.stdout)["instances"]
    assert back["alive"] is True and back["dsn"] == inst["dsn"]
    with connect(back) as conn:
        assert conn.execute("SELECT count(*), sum(bal) FROM acc").fetchone() == (51, 5001)
    pids = all_pids(playground_dir)
    assert tm("down", "--dir", d, timeout=60).returncode == 0
    assert [p for p in pids if pid_state(p) != "dead"] == []


def test_supervisor_restarts_a_killed_writer_within_10s(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.244.10", "--instances", "1")  # repair on; human output
    assert up.returncode == 0, up.stderr[-2000:]
    (inst,) = status(playground_dir)["instances"]
    password = password_of(inst)
    assert up.stdout.count(password) == 1  # shown once, to the terminal
    with connect(inst) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        conn.execute("INSERT INTO t VALUES (1, 'before')")
    old_pid = Fleet.load(playground_dir).instances["w1"].pid

    assert tm("kill", "w1", "--dir", d).returncode == 0
    killed_at = time.monotonic()
    written = None
    while time.monotonic() - killed_at < 20:
        try:
            with connect(inst, timeout=1) as conn:
                conn.execute("INSERT INTO t VALUES (2, 'after')")
                written = time.monotonic() - killed_at
                break
        except psycopg.OperationalError:
            time.sleep(0.05)
    print(f"kill w1 -> write accepted again: {written}")
    assert written is not None and written < 10, written
    assert Fleet.load(playground_dir).instances["w1"].pid != old_pid
    with connect(inst) as conn:
        assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == [(1, "before"), (2, "after")]
    for log in (playground_dir / "logs").iterdir():
        assert password not in log.read_text(errors="replace"), log


def test_too_many_instances_are_refused_in_one_line(tmp_path: Path) -> None:
    result = tm("up", "--dir", str(tmp_path / "pg"), "--base-ip", "127.0.244.100", "--instances", "9")
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "replicas" in lines[0], result.stderr
    assert not (tmp_path / "pg" / "fleet.json").exists()  # nothing was started


async def test_a_fenced_writer_shows_as_fenced_and_is_not_restarted_until_asked(playground_dir: Path) -> None:
    d = str(playground_dir)
    up = tm("up", "--dir", d, "--base-ip", "127.0.245.10", "--instances", "1", "--json")  # supervisor on
    assert up.returncode == 0, up.stderr[-2000:]
    (inst,) = json.loads(up.stdout)["instances"]
    with connect(inst) as conn:
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
        conn.execute("INSERT INTO t VALUES (1)")
    pid = Fleet.load(playground_dir).instances["w1"].pid
    topology = load_topology(playground_dir)
    other = await Writer.open(topology, timeout=30, membership_source=membership_source(playground_dir))
    record_volume_epoch(playground_dir, topology.volume_epoch)
    await other.close()  # a newer writer opened the volume: w1 is stale
    with connect(inst) as conn, pytest.raises(psycopg.errors.AdminShutdown):
        conn.execute("INSERT INTO t VALUES (2)")  # its commit meets the new epoch: refused, never answered
    (fenced,) = status(playground_dir)["instances"]
    assert fenced["endpoint"] == "fenced" and fenced["alive"] is False and fenced["process"] == "running"
    time.sleep(1.5)  # three supervisor ticks: a running (fenced) writer is left alone
    assert Fleet.load(playground_dir).instances["w1"].pid == pid
    assert tm("restart", "w1", "--dir", d).returncode == 0
    with connect(inst) as conn:
        assert conn.execute("SELECT k FROM t").fetchall() == [(1,)]
