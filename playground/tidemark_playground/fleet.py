"""The playground fleet: storage-node processes on loopback, recorded in DIR/fleet.json,
and the database instances over it (`tidemark sql serve` processes, see instances.py)."""

from __future__ import annotations

import asyncio
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp
import psutil

from tidemark_backup.objstore import check_url
from tidemark_compute.topology import (
    NODE_KEY_FILE,
    TLS_CA_FILE,
    TLS_DIR,
    TOPOLOGY_FILE,
    Topology,
    load_fleet_tls,
    load_node_credentials,
    load_topology,
    save_topology,
    write_node_key,
)
from tidemark_protocol.errors import UserError
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.node_auth import Role
from tidemark_protocol.placement import NodeInfo, place
from tidemark_protocol.quorum import Membership

from .instances import (
    CREDENTIALS_FILE,
    MAX_INSTANCES,
    InstanceProc,
    credentials_user,
    ensure_credentials,
    instance_name,
    next_address,
    pick_port,
    serve_command,
    wait_instance_ready,
)
from .tls import certificate_for

FLEET_FILE = "fleet.json"
ZONES = ("a", "b", "c")


class FleetError(UserError):
    """What the user can fix: a bad option, no fleet in the directory, a half-made fleet."""


class NoFleetError(FleetError, FileNotFoundError):
    """No fleet.json in the directory."""


@dataclass
class NodeProc:
    name: str
    zone: str
    host: str
    port: int
    pid: int = 0
    start_time: float | None = None  # wall-clock start, in fleet.json of older versions only
    tls: bool = False  # serves https with a certificate of the fleet's CA (every new fleet)
    start_ticks: int | None = None  # start_ticks_of(pid); None in fleet.json of older versions

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pid_state(pid: int, start_ticks: int | None = None, ours: bool = False,
              start_time: float | None = None) -> str:
    """'running', 'paused' (SIGSTOPped) or 'dead'. With START_TICKS (when we started it,
    in clock ticks after boot) a pid now held by a process started at another moment was
    reused: that is 'dead' too, never ours to signal. START_TIME is the wall-clock start
    fleet.json of older versions recorded (compared within a second). Without either
    and with OURS, a process whose command line is not a tidemark one is 'dead' too."""
    if pid <= 0:
        return "dead"
    try:
        proc = psutil.Process(pid)
        if start_ticks is not None and start_ticks_of(pid) != start_ticks:
            return "dead"
        if start_ticks is None and start_time is not None and abs(proc.create_time() - start_time) > 1.0:
            return "dead"
        if start_ticks is None and start_time is None and ours and not _tidemark_cmdline(proc.cmdline()):
            return "dead"
        status = proc.status()
    except psutil.Error:
        return "dead"
    if status in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD):
        return "dead"
    return "paused" if status == psutil.STATUS_STOPPED else "running"


def state_of(proc: NodeProc | InstanceProc, ours: bool = True) -> str:
    return pid_state(proc.pid, proc.start_ticks, ours, proc.start_time)


def _tidemark_cmdline(cmdline: list[str]) -> bool:
    """`python -m tidemark_cli.main …` or the `tidemark` script: what the fleet starts."""
    return any(Path(arg).name == "tidemark" or arg.startswith("tidemark_") for arg in cmdline)


def start_ticks_of(pid: int) -> int | None:
    """When PID started, in clock ticks after boot (field 22 of /proc/PID/stat). Not
    psutil's create_time: that adds the boot time as the wall clock has it now, so a
    clock step (NTP on a CI machine) moves it, a live writer looks like a reused pid and
    the supervisor starts a second writer, which fences the first."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # after the command name, which may hold spaces


def kill_pid(pid: int, start_ticks: int | None, timeout: float = 10.0, start_time: float | None = None) -> bool:
    """SIGKILL it if it is still the process we started; waits (bounded) until it is gone.
    Returns whether it was signalled."""
    if pid_state(pid, start_ticks, True, start_time) == "dead":
        return False
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while pid_state(pid, start_ticks, False, start_time) != "dead" and time.monotonic() < deadline:
        _reap(pid)  # if it is our child
        time.sleep(0.02)
    return True


_local = threading.local()  # fleet locks this thread holds: re-entrant per directory


@contextmanager
def fleet_lock(directory: Path) -> Iterator[None]:
    """Serializes read-modify-write of fleet.json and instance (re)starts across processes:
    the CLI and the supervisor both restart instances, and two writers must never be
    spawned for one name (the loser would be an orphan no `down` could find)."""
    key = str(directory.resolve())
    _held: dict[str, int] = _local.__dict__.setdefault("held", {})
    if _held.get(key):
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / (FLEET_FILE + ".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _held[key] = 1
        try:
            yield
        finally:
            _held.pop(key, None)
            fcntl.flock(lock, fcntl.LOCK_UN)


def _reap(pid: int) -> None:
    try:  # a dead child of ours stays a zombie until waited for
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


class Fleet:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.nodes: dict[str, NodeProc] = {}
        self.instances: dict[str, InstanceProc] = {}
        self.options: dict = {}
        self.new_password: str | None = None  # generated by this process: shown once, never saved here

    # -- persistence ------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> Fleet:
        path = directory / FLEET_FILE
        if not path.exists():
            raise NoFleetError(f"no playground in {directory}: run `tidemark playground up --dir {directory}`")
        data = json.loads(path.read_text())
        fleet = cls(directory)
        fleet.nodes = {n["name"]: NodeProc(**n) for n in data["nodes"]}
        fleet.instances = {i["name"]: InstanceProc(**i) for i in data.get("instances", [])}
        fleet.options = data.get("options", {})
        return fleet

    def _write(self) -> None:
        data = {"nodes": [asdict(n) for n in self.nodes.values()],
                "instances": [asdict(i) for i in self.instances.values()], "options": self.options}
        tmp = self.dir / (FLEET_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.dir / FLEET_FILE)

    def save(self) -> None:
        with fleet_lock(self.dir):
            self._write()

    def _persist(self, name: str | None = None, options: bool = False) -> None:
        """Write one entry (a node or an instance; with `options` our options too) into
        fleet.json as it is on disk now: another process may have restarted something
        since we loaded it."""
        with fleet_lock(self.dir):
            if not (self.dir / FLEET_FILE).exists():
                self._write()
                return
            disk = Fleet.load(self.dir)
            if name in self.nodes:
                disk.nodes[name] = self.nodes[name]
            if name in self.instances:
                disk.instances[name] = self.instances[name]
            if options:
                disk.options.update(self.options)
            disk._write()

    # -- processes --------------------------------------------------------------------
    def data_dir(self, name: str) -> Path:
        return self.dir / "data" / name

    def log_file(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def spawn(self, node: NodeProc) -> None:
        self.data_dir(node.name).mkdir(parents=True, exist_ok=True)
        self.log_file(node.name).parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "tidemark_cli.main", "node", "run",
            "--name", node.name, "--zone", node.zone,
            "--host", node.host, "--port", str(node.port),
            "--data", str(self.data_dir(node.name)),
            "--auth-key-file", str(write_node_key(self.dir)),
        ]  # fmt: skip
        if node.tls:  # the fleet's own CA (tls.py); certificates re-issued as they near expiry
            cert, key = certificate_for(self.dir, node.name, node.host)
            cmd += ["--tls-cert", str(cert), "--tls-key", str(key),
                    "--tls-ca", str(self.dir / TLS_DIR / TLS_CA_FILE)]
        for flag, key in (("--gossip-interval", "gossip_interval"), ("--backup", "backup"),
                          ("--backup-interval", "backup_interval"),
                          ("--backup-snapshot-interval", "backup_snapshot_interval"),
                          ("--backup-extent-kib", "backup_extent_kib"),
                          ("--scrub-interval", "scrub_interval"),
                          ("--materialize-interval", "materialize_interval")):
            if key in self.options:
                cmd += [flag, str(self.options[key])]
        for path in self.options.get("backup_key_files", []):  # paths only: keys stay in files
            cmd += ["--backup-key-file", str(path)]
        if self.options.get("fault_injection"):  # `tidemark chaos corrupt` only
            cmd.append("--enable-fault-injection")
        with self.log_file(node.name).open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        node.pid, node.start_ticks, node.start_time = proc.pid, start_ticks_of(proc.pid), None
        self._persist(node.name)

    # -- database instances -----------------------------------------------------------
    def add_instance(self, role: str = "writer", password_file: Path | None = None) -> InstanceProc:
        """Record a new instance (not started): the next loopback address after the
        nodes, port 5432 unless taken there, the user's credentials file or a generated
        DIR/instance-credentials."""
        if len(self.instances) >= MAX_INSTANCES:
            raise ValueError(f"at most {MAX_INSTANCES} instances (one writer, replicas)")
        if (role == "writer") == any(i.role == "writer" for i in self.instances.values()):
            raise ValueError("the first instance is the writer, every other one a replica")
        if password_file is None:
            password_file, self.new_password = ensure_credentials(self.dir)
        password_file = password_file.resolve()
        host = next_address([n.host for n in self.nodes.values()], [i.host for i in self.instances.values()])
        name = instance_name(role, sum(1 for i in self.instances.values() if i.role == role) + 1)
        port = pick_port(host)
        inst = InstanceProc(name, role, host, port, str(password_file), credentials_user(password_file),
                            admin_port=pick_port(host, port + 1))
        self.instances[name] = inst
        self._persist(name)
        return inst

    def spawn_instance(self, inst: InstanceProc) -> None:
        """Start `tidemark sql serve` for it (Writer.open: recovery + seal); not waited for."""
        self.log_file(inst.name).parent.mkdir(parents=True, exist_ok=True)
        with fleet_lock(self.dir), self.log_file(inst.name).open("ab") as out:
            proc = subprocess.Popen(
                serve_command(self.dir, inst), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
            inst.pid, inst.start_ticks, inst.start_time = proc.pid, start_ticks_of(proc.pid), None
            self._persist(inst.name)

    def restart_dead_instances(self) -> list[str]:
        """Start every recorded instance whose process is gone (paused ones are left
        alone). Re-reads fleet.json under the lock, so a concurrent restart by another
        process is seen and not doubled."""
        started = []
        with fleet_lock(self.dir):
            if (self.dir / FLEET_FILE).exists():
                self.instances = Fleet.load(self.dir).instances
            for inst in self.instances.values():
                if state_of(inst) == "dead":
                    _reap(inst.pid)
                    self.spawn_instance(inst)
                    started.append(inst.name)
        return started

    async def wait_instances(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        if names is None:  # a paused instance cannot answer: `resume` it
            names = [n for n in self.instances if self.state(n) != "paused"]
        for name in names:
            inst = self.instances[name]
            await wait_instance_ready(inst, lambda name=name: self.state(name) != "dead",
                                      self.log_file(name), timeout)

    # -- faults (a node or an instance, by name) --------------------------------------
    def _proc(self, name: str) -> NodeProc | InstanceProc:
        return self.instances[name] if name in self.instances else self.nodes[name]

    def state(self, name: str) -> str:
        proc = self._proc(name)
        return state_of(proc)

    def signal(self, name: str, sig: signal.Signals, expect: str | None = None, timeout: float = 2.0) -> None:
        """Send SIG if its process is still ours; then wait (bounded) for state EXPECT:
        a signal takes effect when the process is next scheduled."""
        if self.state(name) == "dead":
            return
        os.kill(self._proc(name).pid, sig)
        deadline = time.monotonic() + timeout
        while expect and self.state(name) not in (expect, "dead") and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill(self, name: str) -> bool:
        """SIGKILL its process if it is still the one we started; whether it was signalled."""
        proc = self._proc(name)
        return kill_pid(proc.pid, proc.start_ticks, start_time=proc.start_time)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP, expect="paused")

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT, expect="running")

    def restart(self, name: str) -> None:
        with fleet_lock(self.dir):  # never alongside the supervisor's restart of the same instance
            if name in self.instances:
                self.instances[name] = Fleet.load(self.dir).instances[name]
            if self.state(name) == "paused":
                self.resume(name)
            self.kill(name)
            if name in self.instances:
                self.spawn_instance(self.instances[name])
            else:
                self.spawn(self.nodes[name])

    def spawn_supervisor(self, command: list[str] | None = None) -> None:
        """The repair loop runs as its own process, like an operator's daemon. COMMAND
        (default `tidemark playground supervise`) gets the options appended."""
        repair = self.options.get("repair", {})
        base = command or [sys.executable, "-m", "tidemark_cli.main", "playground", "supervise"]
        cmd = [*base, "--dir", str(self.dir)]
        for key, value in repair.items():
            cmd += [f"--{key.replace('_', '-')}", str(value)]
        self.log_file("supervisor").parent.mkdir(parents=True, exist_ok=True)
        with self.log_file("supervisor").open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.options["supervisor_pid"] = proc.pid
        self.options["supervisor_start_ticks"] = start_ticks_of(proc.pid)
        self.options.pop("supervisor_start_time", None)  # an older version's
        self._persist(options=True)

    def supervisor_state(self) -> str:
        return pid_state(*self._supervisor_identity(), ours=True, start_time=self.options.get("supervisor_start_time"))

    def _supervisor_identity(self) -> tuple[int, int | None]:
        return int(self.options.get("supervisor_pid", 0)), self.options.get("supervisor_start_ticks")

    def stop_supervisor(self) -> bool:
        with fleet_lock(self.dir):  # not in the middle of restarting an instance
            return kill_pid(*self._supervisor_identity(), start_time=self.options.get("supervisor_start_time"))

    def stop(self, names: list[str]) -> list[str]:
        """Kill these instances, nodes and/or "supervisor"; returns those that were running."""
        stopped = ["supervisor"] if "supervisor" in names and self.stop_supervisor() else []
        for name in (n for n in names if n != "supervisor"):
            if self.state(name) == "paused":
                self.resume(name)
            if self.kill(name):
                stopped.append(name)
        return stopped

    def down(self) -> list[str]:
        """Stop the supervisor, every instance and every node; returns what was running."""
        stopped = self.stop(["supervisor"])
        if (self.dir / FLEET_FILE).exists():  # the pids the supervisor may have restarted
            self.instances = Fleet.load(self.dir).instances
        return stopped + self.stop([*self.instances, *self.nodes])  # instances first: no writer spinning on dead nodes


def check_options(nodes_per_zone: int, pgs: int, pages_per_pg: int, page_size: int, base_ip: str,
                  instances: int | None = None, password_file: Path | None = None,
                  repair: dict | None = None, backup: str | None = None) -> None:
    """Every option of `up`, checked before anything starts: FleetError (or StoreError for
    --backup) says what is wrong."""
    if backup is not None:
        check_url(backup)
    if nodes_per_zone < 2:
        raise FleetError(f"--nodes-per-zone {nodes_per_zone}: each zone needs at least 2 nodes "
                         "(2 segments of every PG per zone)")
    if pgs < 1:
        raise FleetError(f"--pgs {pgs}: a volume needs at least 1 protection group")
    if pages_per_pg < 1 or page_size < 16:
        raise FleetError(f"--pages-per-pg {pages_per_pg} --page-size {page_size}: need at least 1 page "
                         "of at least 16 bytes per PG")
    check_base_ip(base_ip, 3 * nodes_per_zone + (instances or 0))  # the nodes, then the instances
    if instances is not None and not 0 <= instances <= MAX_INSTANCES:
        raise FleetError(f"--instances {instances}: use 0 (storage only) to {MAX_INSTANCES} "
                         "(the writer and N-1 read replicas)")
    if password_file is not None:
        try:
            credentials_user(password_file)
        except (OSError, ValueError) as exc:
            raise FleetError(f"--password-file: {exc}") from None
    if repair is not None and (repair["node_loss_timeout"] < 0 or repair["max_concurrent"] < 1
                               or repair["bandwidth"] < 0):
        raise FleetError("--node-loss-timeout and --rebuild-bandwidth must be >= 0, "
                         "--max-concurrent-rebuilds >= 1")


def check_base_ip(base_ip: str, needed: int) -> None:
    """FleetError unless BASE_IP is a loopback address with NEEDED addresses from it in its /24."""
    try:
        first = ipaddress.IPv4Address(base_ip)
    except ValueError:
        raise FleetError(f"--base-ip {base_ip!r}: not an IPv4 address") from None
    if not first.is_loopback:
        raise FleetError(f"--base-ip {base_ip}: must be a loopback address (127.0.0.0/8)")
    if not 1 <= int(first) % 256 <= 255 - needed:
        raise FleetError(f"--base-ip {base_ip}: {needed} addresses from it must fit in "
                         f"{base_ip.rsplit('.', 1)[0]}.1-254")


# Everything `playground up` and the fleet's processes write into DIR (what `down
# --purge` may delete; anything else in DIR is the user's and stays).
FLEET_ENTRIES = ("data", "logs", FLEET_FILE, FLEET_FILE + ".lock", FLEET_FILE + ".tmp", TOPOLOGY_FILE,
                 TOPOLOGY_FILE + ".lock", "topology.tmp", CREDENTIALS_FILE, "repairs.json", "repairs.tmp",
                 "writer.json", "writer.tmp", NODE_KEY_FILE, TLS_DIR)


def purge(directory: Path) -> list[str]:
    """Delete the fleet's own entries of DIRECTORY, and DIRECTORY if nothing else is left;
    returns the names left behind (not ours)."""
    for name in FLEET_ENTRIES:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    left = sorted(p.name for p in directory.iterdir())
    if not left:
        directory.rmdir()
    return left


def build_fleet(directory: Path, nodes_per_zone: int, base_ip: str, tls: bool = True) -> Fleet:
    """A fresh fleet layout: zones a/b/c, one 127.0.0.x address per node (options checked);
    TLS off only for the benchmark that measures what it costs."""
    prefix, last = base_ip.rsplit(".", 1)
    fleet = Fleet(directory)
    index = int(last)
    for zone in ZONES:
        for i in range(1, nodes_per_zone + 1):
            host = f"{prefix}.{index}"
            index += 1
            name = f"{zone}{i}"
            fleet.nodes[name] = NodeProc(name, zone, host, free_port(host), tls=tls)
    return fleet


async def wait_ready(nodes: list[NodeProc], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    # /readyz carries no secret and the node is ours (a pid we started): its certificate
    # is checked by every call that matters, not by this probe.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2),
                                     connector=aiohttp.TCPConnector(ssl=False)) as session:
        for node in nodes:
            while True:
                try:
                    async with session.get(f"{node.url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                if state_of(node, ours=False) == "dead":
                    raise RuntimeError(f"node {node.name} exited during startup (see its log in logs/)")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.name} at {node.url} not ready in {timeout}s")
                await asyncio.sleep(0.1)


async def create_segments(fleet: Fleet, topology: Topology) -> None:
    async with topology.session(Role.ADMIN, timeout=aiohttp.ClientTimeout(total=10)) as session:
        for pg, membership in topology.memberships.items():
            peers = {m: topology.nodes[m] for m in membership.all_members}
            body = {
                "layout": topology.layout.to_json(),
                "membership": membership.to_json(),
                "peers": peers,
                "volume_epoch": topology.volume_epoch,
            }
            for member in membership.all_members:
                async with session.put(f"{topology.nodes[member]}/v1/segments/{pg}", json=body) as resp:
                    if resp.status >= 400:
                        raise RuntimeError(f"creating pg {pg} on {member}: {await resp.text()}")


def initial_topology(fleet: Fleet, pgs: int, pages_per_pg: int, page_size: int) -> Topology:
    nodes = [NodeInfo(n.name, n.zone) for n in fleet.nodes.values()]
    placement = place(list(range(pgs)), nodes)
    return Topology(
        layout=VolumeLayout(pgs, pages_per_pg, page_size),
        nodes={n.name: n.url for n in fleet.nodes.values()},
        memberships={pg: Membership(1, members) for pg, members in placement.items()},
        credentials=load_node_credentials(fleet.dir),
        tls=load_fleet_tls(fleet.dir),
    )


async def up(
    directory: Path,
    nodes_per_zone: int = 2,
    pgs: int = 4,
    pages_per_pg: int = 64,
    page_size: int = 4096,
    base_ip: str = "127.0.0.10",
    gossip_interval: float | None = None,
    scrub_interval: float | None = None,
    repair: dict | None = None,
    backup: str | None = None,
    backup_options: dict | None = None,
    fault_injection: bool = False,
    instances: int | None = 0,
    password_file: Path | None = None,
    tls: bool = True,
) -> tuple[Fleet, Topology]:
    """Start a fleet in `directory` (or restart the stopped nodes and instances of an
    existing one).

    `repair`: None for no automatic repair, else the supervisor's options
    (node_loss_timeout, max_concurrent, bandwidth). `fault_injection`: the nodes serve
    the fake disk corruption endpoints (`tidemark node run --enable-fault-injection`;
    kept for restarts of this fleet). `instances`: database instances (0 = storage
    only, else the writer and N-1 read replicas; None = 0 for a new fleet, as
    recorded for an existing one); an existing
    fleet with fewer gets the missing ones. `password_file`: their credentials (lines
    of user:password), else a generated DIR/instance-credentials."""
    check_options(nodes_per_zone, pgs, pages_per_pg, page_size, base_ip, instances, password_file, repair, backup)
    if (directory / FLEET_FILE).exists():
        return await _start_existing(directory, instances, password_file)
    directory.mkdir(parents=True, exist_ok=True)
    fleet = build_fleet(directory, nodes_per_zone, base_ip, tls)
    if gossip_interval is not None:
        fleet.options["gossip_interval"] = gossip_interval
    if scrub_interval is not None:
        fleet.options["scrub_interval"] = scrub_interval
    if fault_injection:
        fleet.options["fault_injection"] = True
    if backup:  # every node streams backups there (`tidemark node run --backup URL`)
        fleet.options["backup"] = backup
        fleet.options.update(backup_options or {})
    try:
        fleet.save()
        for node in fleet.nodes.values():
            fleet.spawn(node)
        await wait_ready(list(fleet.nodes.values()))
        topology = initial_topology(fleet, pgs, pages_per_pg, page_size)
        await create_segments(fleet, topology)
        save_topology(directory, topology)
        await _add_instances(fleet, instances or 0, password_file)
        if repair is not None:
            fleet.options["repair"] = repair
            fleet.spawn_supervisor()
    except BaseException:  # a half-made fleet is no fleet: stop what we started, forget it (logs stay)
        fleet.down()
        for name in (FLEET_FILE, TOPOLOGY_FILE):
            (directory / name).unlink(missing_ok=True)
        raise
    return fleet, topology


async def _add_instances(fleet: Fleet, count: int, password_file: Path | None) -> list[str]:
    """Up to COUNT instances: the writer first (serving before any replica starts, so
    replicas find its feed), then replicas. Returns the names started."""
    started = []
    while len(fleet.instances) < count:
        role = "replica" if any(i.role == "writer" for i in fleet.instances.values()) else "writer"
        inst = fleet.add_instance(role, password_file)
        fleet.spawn_instance(inst)
        started.append(inst.name)
        await fleet.wait_instances([inst.name])
    return started


async def _start_existing(directory: Path, instances: int | None,
                          password_file: Path | None) -> tuple[Fleet, Topology]:
    """Restart the stopped nodes, instances and supervisor of the fleet in DIRECTORY (and add
    the instances asked for); if that fails, stop again what this call started."""
    fleet = Fleet.load(directory)
    if not (directory / TOPOLOGY_FILE).exists():
        raise FleetError(f"{directory} holds a half-made fleet (no {TOPOLOGY_FILE}): "
                         f"`tidemark playground down --dir {directory} --purge`, then `up` again")
    started: list[str] = []
    try:
        for name, node in fleet.nodes.items():
            if fleet.state(name) == "dead":
                fleet.spawn(node)
                started.append(name)
        await wait_ready(list(fleet.nodes.values()))
        started += fleet.restart_dead_instances()
        await fleet.wait_instances()
        started += await _add_instances(fleet, instances or 0, password_file)
        if "repair" in fleet.options and fleet.supervisor_state() == "dead":
            fleet.spawn_supervisor()
            started.append("supervisor")
    except BaseException:
        fleet.stop(started[::-1])  # the supervisor and instances first
        raise
    return fleet, load_topology(directory)


__all__ = ["Fleet", "FleetError", "InstanceProc", "NoFleetError", "NodeProc", "TOPOLOGY_FILE", "fleet_lock", "up",
           "wait_ready", "pid_state"]
