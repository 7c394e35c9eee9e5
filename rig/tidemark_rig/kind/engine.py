"""The Docker engine kind runs on: use a running one, or install and start Debian's.

A running engine (the default socket, or `DOCKER_HOST`) is used and left alone. Else
Debian's `docker.io` is installed if `dockerd` is missing, and started by hand with its
data under the cache (so the node image built into it survives): nothing on this kind of
machine starts it. It keeps running after `tidemark dev kind up` returns, like the
cluster on it; `tidemark dev kind down --stop-engine` stops only an engine we started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from ..procs import RigError
from ..versions import cache_root
from . import egress

SOCKET = "/var/run/docker.sock"
PIDFILE = Path("/run/tidemark-dockerd.pid")


def docker() -> str:
    path = shutil.which("docker")
    if path is None:
        raise RigError("no docker client on PATH (apt-get install docker.io)")
    return path


def engine_answers(timeout: float = 10.0) -> bool:
    try:
        done = subprocess.run([docker(), "version", "--format", "{{.Server.Version}}"],
                              capture_output=True, text=True, timeout=timeout)
    except (subprocess.TimeoutExpired, RigError):
        return False
    return done.returncode == 0 and bool(done.stdout.strip())


def _apt_install(packages: list[str], log: Path) -> None:
    if os.geteuid() != 0:
        raise RigError(f"{', '.join(packages)} missing and not root: install them with apt-get")
    with log.open("a") as fh:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                              stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=900)
    if done.returncode != 0:
        raise RigError(f"apt-get install {' '.join(packages)} failed; log: {log}")


def ensure_packages(log: Path) -> None:
    """What the offline path needs from Debian: the engine, debootstrap, iptables."""
    missing = [pkg for tool, pkg in (("dockerd", "docker.io"), ("debootstrap", "debootstrap"),
                                     ("iptables", "iptables"), ("gcc", "gcc"))
               if shutil.which(tool) is None]
    if missing:
        _apt_install(missing, log)


def we_started_it() -> bool:
    return PIDFILE.exists()


def ensure_engine(log_dir: Path) -> str:
    """Return 'running' (an engine was there) or 'started' (we started Debian's dockerd)."""
    if engine_answers():
        return "running"
    if os.environ.get("DOCKER_HOST"):
        raise RigError(f"DOCKER_HOST={os.environ['DOCKER_HOST']} does not answer; start that engine "
                       "or unset DOCKER_HOST")
    ensure_packages(log_dir / "apt.log")
    data = cache_root() / "docker"
    data.mkdir(parents=True, exist_ok=True)
    log = log_dir / "dockerd.log"
    with log.open("a") as fh:
        subprocess.Popen(
            ["dockerd", "--data-root", str(data), "--exec-root", "/run/tidemark-docker",
             "--pidfile", str(PIDFILE), "-H", f"unix://{SOCKET}",
             # Containers never resolve names off this machine (egress.py, "DNS").
             "--dns", egress.DNS_SINK],
            stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not engine_answers(timeout=5):
        if time.monotonic() > deadline:
            raise RigError(f"dockerd did not answer within 60 s; log: {log}")
        time.sleep(0.5)
    return "started"


def stop_engine(timeout: float = 30.0) -> bool:
    """Stop the engine only if we started it (its pid file is ours)."""
    if not PIDFILE.exists():
        return False
    pid = int(PIDFILE.read_text().strip())
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.3)
    os.kill(pid, signal.SIGKILL)
    return True
