"""The PostgreSQL baseline of `tidemark bench sql`: PostgreSQL 15 from Debian as a
primary plus 5 streaming standbys on 127.0.0.1 with `synchronous_standby_names =
'ANY 3 (s1,...,s5)'` and `synchronous_commit = on` (6 copies, commit on 4: Tidemark's
geometry), in a temp dir that is removed afterwards.

PostgreSQL refuses to run as root, so every server and client command runs as the
`postgres` system user (Debian's package creates it) via `runuser -u postgres --`
when we are root; the temp dir is owned by that user. Loopback-only, trust auth: the
cluster lives for one benchmark and listens on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import psutil

PG_BIN = Path("/usr/lib/postgresql/15/bin")
HOST = "127.0.0.1"
USER = "postgres"
STANDBYS = 5
QUORUM = 3


def available() -> str | None:
    """None if the baseline can run here, else why not."""
    for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres", "pgbench", "psql"):
        if not (PG_BIN / tool).exists():
            return f"{PG_BIN / tool} not found (Debian: apt-get install postgresql-15)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(USER)
        except KeyError:
            return "running as root and there is no 'postgres' user to run PostgreSQL as"
    return None


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PgQuorum:
    def __init__(self, say: Callable[[str], None] = lambda _text: None, standbys: int = STANDBYS,
                 quorum: int = QUORUM) -> None:
        self.say = say
        self.standbys = standbys
        self.quorum = quorum
        self.dir = Path(tempfile.mkdtemp(prefix="tidemark-bench-pg-"))
        self.as_root = os.geteuid() == 0
        if self.as_root:
            entry = pwd.getpwnam(USER)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o700)
        self.port = _free_port()
        self.nodes: list[tuple[str, Path, int]] = []  # (name, data dir, port), primary first
        self.started: list[Path] = []

    # -- commands -------------------------------------------------------------------------
    def command(self, tool: str, *args: str) -> list[str]:
        cmd = [str(PG_BIN / tool), *args]
        return ["runuser", "-u", USER, "--", *cmd] if self.as_root else cmd

    def run(self, tool: str, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.command(tool, *args), capture_output=True, text=True, timeout=timeout,
                                cwd=self.dir, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed: {(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def sql(self, query: str, port: int | None = None) -> str:
        out = self.run("psql", "-h", HOST, "-p", str(port or self.port), "-U", USER, "-d", "postgres", "-XAtq",
                       "-v", "ON_ERROR_STOP=1", "-c", query, timeout=60)
        return out.stdout.strip()

    def pgbench_args(self, port: int | None = None) -> list[str]:
        """Connection options for the primary, or the server on `port` (a standby)."""
        return ["-h", HOST, "-p", str(port or self.port), "-U", USER]

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, settings: Sequence[str] = ()) -> None:
        """Primary and standbys; `settings` are extra postgresql.conf lines of the
        primary (the standbys copy them with the base backup)."""
        primary = self.dir / "primary"
        self.run("initdb", "-D", str(primary), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        names = ",".join(f"s{i}" for i in range(1, self.standbys + 1))
        self._conf(primary, self.port, [
            "wal_level = replica",
            f"max_wal_senders = {self.standbys + 4}",
            f"synchronous_standby_names = 'ANY {self.quorum} ({names})'",
            "synchronous_commit = on",
            *settings,
        ])
        self._pg_ctl_start(primary)
        self.nodes.append(("primary", primary, self.port))
        for i in range(1, self.standbys + 1):
            name, port = f"s{i}", _free_port()
            data = self.dir / name
            self.run("pg_basebackup", "-h", HOST, "-p", str(self.port), "-U", USER, "-D", str(data),
                     "-X", "stream", "-R", "--no-sync")
            self._conf(data, port, [  # later lines win over the copied primary's settings
                f"primary_conninfo = 'host={HOST} port={self.port} user={USER} application_name={name}'",
                "synchronous_standby_names = ''",
            ], auto=True)
            self._pg_ctl_start(data)
            self.nodes.append((name, data, port))
        self._wait_quorum()

    def _conf(self, data: Path, port: int, lines: list[str], auto: bool = False) -> None:
        path = data / ("postgresql.auto.conf" if auto else "postgresql.conf")
        base = [f"port = {port}", f"listen_addresses = '{HOST}'", f"unix_socket_directories = '{self.dir}'"]
        with path.open("a") as out:
            out.write("\n# tidemark bench sql\n" + "\n".join(base + lines) + "\n")

    def _pg_ctl_start(self, data: Path) -> None:
        self.started.append(data)
        self.run("pg_ctl", "-D", str(data), "-l", str(data.parent / f"{data.name}.log"), "-w", "-t", "60", "start")

    def _wait_quorum(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.sql("SELECT application_name || ':' || sync_state FROM pg_stat_replication "
                            "WHERE state = 'streaming'")
            streaming = [r for r in rows.splitlines() if r.endswith(":quorum")]
            if len(streaming) == self.standbys:
                self.say(f"  postgres: primary :{self.port} + {self.standbys} standbys streaming, "
                         f"ANY {self.quorum} quorum commit")
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"standbys not streaming in {timeout}s: {rows!r}")
            time.sleep(0.2)

    def wal_lsn(self) -> str:
        return self.sql("SELECT pg_current_wal_lsn()")

    def wal_bytes_since(self, lsn: str) -> int:
        return int(float(self.sql(f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{lsn}')")))

    def stop(self) -> None:
        """Stop every server this object started (standbys first), then remove the dir."""
        postmasters = [pid for pid in map(self._postmaster, self.started) if pid]
        for data in reversed(self.started):
            result = self.run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop", check=False)
            if result.returncode != 0:
                pid = self._postmaster(data)
                if pid:
                    os.kill(pid, signal.SIGKILL)
        self.started.clear()
        # pg_ctl returns once the pid file is gone, a moment before the postmaster exits
        deadline = time.monotonic() + 10
        while any(_running(pid) for pid in postmasters) and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(self.dir, ignore_errors=True)

    def postmasters(self) -> list[int]:
        """The running servers' postmaster pids, primary first (for CPU accounting)."""
        return [pid for pid in (self._postmaster(data) for _name, data, _port in self.nodes) if pid]

    @staticmethod
    def _postmaster(data: Path) -> int | None:
        try:
            return int((data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def __enter__(self) -> PgQuorum:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
