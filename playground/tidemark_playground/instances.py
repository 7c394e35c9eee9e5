"""Database instances of the playground: `tidemark sql serve` processes over the fleet.

One writer, `w1`, and read replicas `r1`, `r2`, … (they follow the writer's feed, found
in DIR/writer.json, and never open the volume). Each instance gets its own loopback
address from the fleet's range (after the last node's), port 5432 unless that is taken
there, an admin port (status, /metrics, the writer's replica feed), and the
credentials file DIR/instance-credentials (mode 0600, `tidemark:<generated password>`)
unless the user gave one. The password never appears on a command line or in a log:
the server process reads the file.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .tls import certificate_for

CREDENTIALS_FILE = "instance-credentials"
DEFAULT_PORT = 5432
DATABASE = "tidemark"  # the server accepts any database name; this is the one we advertise
MAX_INSTANCES = 8  # the writer and up to 7 replicas (addresses after the nodes', in one /24)


@dataclass
class InstanceProc:
    name: str
    role: str
    host: str
    port: int
    password_file: str
    user: str
    pid: int = 0
    start_time: float | None = None  # wall-clock start, in fleet.json of older versions only
    admin_port: int = 0  # 0 in fleet.json of older versions: any free port, no status
    start_ticks: int | None = None  # fleet.start_ticks_of(pid); None in fleet.json of older versions

    @property
    def admin_url(self) -> str | None:
        return f"http://{self.host}:{self.admin_port}" if self.admin_port else None

    @property
    def dsn(self) -> str:
        """A libpq URL without the password (that is in `password_file`)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{DATABASE}"


def instance_name(role: str, index: int) -> str:
    return f"{'w' if role == 'writer' else 'r'}{index}"


def next_address(node_hosts: list[str], taken: list[str]) -> str:
    """The first address after the fleet's nodes (same /24) that no instance uses."""
    prefix = node_hosts[0].rsplit(".", 1)[0]
    last = max(int(h.rsplit(".", 1)[1]) for h in node_hosts)
    for octet in range(last + 1, 255):
        host = f"{prefix}.{octet}"
        if host not in taken:
            return host
    raise ValueError(f"no free address after {prefix}.{last} for a database instance")


def pick_port(host: str, preferred: int = DEFAULT_PORT) -> int:
    """`preferred` if it can be bound on `host` (as the server will bind it), else any free port."""
    for port in (preferred, 0):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise OSError(f"no free port on {host}")


def credentials_user(path: Path) -> str:
    """The user of the first `user:password` line of a credentials file."""
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            user, sep, password = line.partition(":")
            if sep and user and password:
                return user
    raise ValueError(f"{path}: no line of user:password")


def ensure_credentials(directory: Path, user: str = "tidemark") -> tuple[Path, str | None]:
    """DIR/instance-credentials, created with a fresh password if missing. Returns the
    path and the password when it was generated now (else None: shown once only)."""
    path = directory / CREDENTIALS_FILE
    if path.exists():
        return path, None
    password = secrets.token_urlsafe(18)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(f"{user}:{password}\n")
    return path, password


def read_password(path: Path) -> str:
    for line in path.read_text().splitlines():
        user, sep, password = line.strip().partition(":")
        if sep and user and password and not user.startswith("#"):
            return password
    raise ValueError(f"{path}: no line of user:password")


def serve_command(directory: Path, inst: InstanceProc) -> list[str]:
    cert, key = certificate_for(directory, inst.name, inst.host)
    return [
        sys.executable, "-m", "tidemark_cli.main", "sql", "serve",
        "--dir", str(directory), "--role", inst.role,
        "--listen", f"{inst.host}:{inst.port}", "--password-file", inst.password_file,
        "--admin-listen", f"{inst.host}:{inst.admin_port}",
        # TLS offered (sslmode=require/verify-full with DIR/tls/ca.crt); plain still accepted.
        "--tls-cert", str(cert), "--tls-key", str(key),
    ]  # fmt: skip


def _startup_message(user: str) -> bytes:
    params = b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in
                      (("user", user), ("database", DATABASE), ("application_name", "tidemark-playground")))
    body = struct.pack("!I", 196608) + params + b"\0"  # protocol 3.0
    return struct.pack("!I", len(body) + 4) + body


def probe(host: str, port: int, user: str, timeout: float = 1.0) -> str:
    """What the endpoint says to a startup message (we hang up before authenticating):
    `serving` (it asks for a password), `fenced` (57P01: its writer was fenced, it
    refuses everyone), `full` (53300), `error` (another refusal) or `unreachable`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(_startup_message(user))
            head = sock.recv(5)
            if head[:1] == b"R":
                return "serving"
            if head[:1] != b"E":
                return "unreachable" if not head else "error"
            body = b""
            length = struct.unpack("!I", head[1:5])[0] - 4 if len(head) == 5 else 0
            while len(body) < min(length, 4096):
                chunk = sock.recv(length - len(body))
                if not chunk:
                    break
                body += chunk
            code = next((f[1:].decode(errors="replace") for f in body.split(b"\0") if f[:1] == b"C"), "")
            return {"57P01": "fenced", "53300": "full"}.get(code, "error")
    except OSError:
        return "unreachable"


async def wait_instance_ready(inst: InstanceProc, running: Callable[[], bool], log_file: Path,
                              timeout: float = 60.0) -> None:
    """Until the endpoint serves (asks for a password); fails early (with the log's tail)
    if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        if await asyncio.to_thread(probe, inst.host, inst.port, inst.user) == "serving":
            return
        if not running():
            lines = log_file.read_text(errors="replace").splitlines() if log_file.exists() else []
            errors = [line for line in lines if '"level": "error"' in line or "Error" in line or "error:" in line]
            raise RuntimeError(f"instance {inst.name} exited during startup (see {log_file}): "
                               + " | ".join(line.strip()[:300] for line in errors[-2:]))
        if time.monotonic() > deadline:
            raise TimeoutError(f"instance {inst.name} at {inst.host}:{inst.port} not serving after {timeout}s "
                               f"(see {log_file})")
        await asyncio.sleep(0.1)
