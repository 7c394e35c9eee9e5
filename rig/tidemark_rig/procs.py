"""Starting, tracking and killing the rig's processes; ports; bounded waiting.

Every process is recorded (name, pid, port list) in ``DIR/pids.json`` as soon as it starts,
so a later ``tidemark dev cluster down`` (another Python process) kills exactly what was
started, by pid, and then checks that no recorded port still has a listener.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class RigError(RuntimeError):
    """The rig could not start or a bounded wait ran out; the message names what failed."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.3) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(pred: Callable[[], T], timeout: float, what: str, interval: float = 0.2,
             on_timeout: Callable[[], str] | None = None) -> T:
    """Poll PRED until it returns something truthy; raise RigError naming WHAT after TIMEOUT."""
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while True:
        try:
            res = pred()
            if res:
                return res
        except RigError:
            raise  # a component died: waiting longer cannot help
        except Exception as exc:  # noqa: BLE001 - kept for the timeout message
            last_exc = exc
        if time.monotonic() > deadline:
            detail = f" (last error: {last_exc!r})" if last_exc else ""
            extra = f"\n{on_timeout()}" if on_timeout else ""
            raise RigError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{extra}")
        time.sleep(interval)


def tail(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(data[-lines:])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); treat it as dead.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def kill_pid(pid: int, grace: float = 0.0) -> None:
    """SIGTERM then SIGKILL after GRACE seconds (or SIGKILL at once). Only this pid's group:
    our processes are session leaders, so the group id equals the pid we started."""
    sigs = [signal.SIGTERM, signal.SIGKILL] if grace > 0 else [signal.SIGKILL]
    for sig in sigs:
        for killer in (os.killpg, os.kill):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                killer(pid, sig)
        deadline = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            if not pid_alive(pid):
                return
            time.sleep(0.05)


def pid_runs(pid: int, exe: str) -> bool:
    """True if PID is alive and still runs EXE: a pid from an old pids.json may have been
    reused by an unrelated process, which must never be killed."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return pid_alive(pid) and exe.encode() in argv[:3]


@dataclass
class Proc:
    name: str
    pid: int
    log: Path
    ports: list[int] = field(default_factory=list)
    popen: subprocess.Popen[bytes] | None = None
    exe: str = ""

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_runs(self.pid, self.exe) if self.exe else pid_alive(self.pid)


class ProcessGroup:
    """The processes of one rig directory."""

    def __init__(self, rig_dir: Path) -> None:
        self.dir = rig_dir
        self.log_dir = rig_dir / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.procs: dict[str, Proc] = {}
        self.pidfile = rig_dir / "pids.json"
        if self.pidfile.exists():
            for rec in json.loads(self.pidfile.read_text()):
                self.procs[rec["name"]] = Proc(rec["name"], rec["pid"], Path(rec["log"]),
                                               rec.get("ports", []), exe=rec.get("exe", ""))

    def _save(self) -> None:
        recs = [{"name": p.name, "pid": p.pid, "log": str(p.log), "ports": p.ports, "exe": p.exe}
                for p in self.procs.values()]
        tmp = self.pidfile.with_suffix(".tmp")
        tmp.write_text(json.dumps(recs, indent=1))
        os.replace(tmp, self.pidfile)

    def start(self, name: str, argv: Sequence[str], ports: Sequence[int] = (),
              env: dict[str, str] | None = None, cwd: Path | None = None) -> Proc:
        if name in self.procs and self.procs[name].alive():
            raise RigError(f"{name} is already running (pid {self.procs[name].pid})")
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as fh:
            fh.write(f"\n=== {time.ctime()} $ {' '.join(argv)}\n".encode())
            fh.flush()
            try:
                popen = subprocess.Popen(
                    list(argv), stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=env, cwd=cwd, start_new_session=True,  # own group: killpg(pid) is exact
                )
            except OSError as exc:
                raise RigError(f"could not start {name} ({argv[0]}): {exc}") from exc
        proc = Proc(name, popen.pid, log, list(ports), popen, exe=argv[0])
        self.procs[name] = proc
        self._save()
        return proc

    def check_alive(self, name: str) -> None:
        p = self.procs[name]
        if not p.alive():
            raise RigError(f"{name} (pid {p.pid}) exited; log tail:\n{tail(p.log)}")

    def stop(self, name: str, grace: float = 0.0) -> None:
        p = self.procs.pop(name, None)
        if p is None:
            return
        if p.popen is not None or p.alive():
            kill_pid(p.pid, grace)
        if p.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        self._save()
        self._wait_ports_free(p)

    def stop_all(self, order: Sequence[str] = (), grace: dict[str, float] | None = None) -> None:
        grace = grace or {}
        names = [n for n in order if n in self.procs] + [n for n in self.procs if n not in order]
        errors: list[str] = []
        for n in names:
            try:
                self.stop(n, grace.get(n, 0.0))
            except RigError as exc:
                errors.append(str(exc))
        if errors:
            raise RigError("; ".join(errors))

    @staticmethod
    def _wait_ports_free(p: Proc) -> None:
        for port in p.ports:
            wait_for(lambda port=port: not port_open(port), 10, f"{p.name} to release port {port}")

    def logs(self) -> dict[str, Path]:
        return {p.stem: p for p in sorted(self.log_dir.glob("*.log"))}
