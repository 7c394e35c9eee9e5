"""The playground fleet: storage-node processes on loopback, recorded in DIR/fleet.json."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import aiohttp

from tidemark_compute.topology import TOPOLOGY_FILE, Topology, load_topology, save_topology
from tidemark_protocol.layout import VolumeLayout
from tidemark_protocol.placement import NodeInfo, place
from tidemark_protocol.quorum import Membership

FLEET_FILE = "fleet.json"
ZONES = ("a", "b", "c")


@dataclass
class NodeProc:
    name: str
    zone: str
    host: str
    port: int
    pid: int = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def pid_state(pid: int) -> str:
    """'running', 'paused' (SIGSTOPped) or 'dead'."""
    if pid <= 0:
        return "dead"
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "dead"
    state = stat.rsplit(")", 1)[1].split()[0]
    if state in ("Z", "X"):
        return "dead"
    return "paused" if state == "T" else "running"


class Fleet:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.nodes: dict[str, NodeProc] = {}
        self.options: dict = {}

    # -- persistence ------------------------------------------------------------------
    @classmethod
    def load(cls, directory: Path) -> Fleet:
        path = directory / FLEET_FILE
        if not path.exists():
            raise FileNotFoundError(f"no playground in {directory}: run `tidemark playground up`")
        data = json.loads(path.read_text())
        fleet = cls(directory)
        fleet.nodes = {n["name"]: NodeProc(**n) for n in data["nodes"]}
        fleet.options = data.get("options", {})
        return fleet

    def save(self) -> None:
        data = {"nodes": [asdict(n) for n in self.nodes.values()], "options": self.options}
        tmp = self.dir / (FLEET_FILE + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, self.dir / FLEET_FILE)

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
        ]  # fmt: skip
        for flag, key in (("--gossip-interval", "gossip_interval"), ("--backup", "backup"),
                          ("--backup-interval", "backup_interval"),
                          ("--backup-snapshot-interval", "backup_snapshot_interval"),
                          ("--scrub-interval", "scrub_interval"),
                          ("--materialize-interval", "materialize_interval")):
            if key in self.options:
                cmd += [flag, str(self.options[key])]
        if self.options.get("fault_injection"):  # `tidemark chaos corrupt` only
            cmd.append("--enable-fault-injection")
        with self.log_file(node.name).open("ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        node.pid = proc.pid
        self.save()

    def state(self, name: str) -> str:
        return pid_state(self.nodes[name].pid)

    def signal(self, name: str, sig: signal.Signals) -> None:
        node = self.nodes[name]
        if pid_state(node.pid) != "dead":
            os.kill(node.pid, sig)

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        if pid_state(node.pid) == "dead":
            return
        os.kill(node.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while pid_state(node.pid) != "dead" and time.monotonic() < deadline:
            try:  # reap it if it is our child
                os.waitpid(node.pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.02)

    def pause(self, name: str) -> None:
        self.signal(name, signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.signal(name, signal.SIGCONT)

    def restart(self, name: str) -> None:
        if self.state(name) == "paused":
            self.resume(name)
        self.kill(name)
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
        self.save()

    def stop_supervisor(self) -> None:
        pid = int(self.options.get("supervisor_pid", 0))
        if pid_state(pid) != "dead":
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while pid_state(pid) != "dead" and time.monotonic() < deadline:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.02)

    def down(self) -> None:
        self.stop_supervisor()
        for name in self.nodes:
            if self.state(name) == "paused":
                self.resume(name)
            self.kill(name)


def build_fleet(directory: Path, nodes_per_zone: int, base_ip: str) -> Fleet:
    """A fresh fleet layout: zones a/b/c, one 127.0.0.x address per node."""
    if nodes_per_zone < 2:
        raise ValueError("each zone needs at least 2 nodes (2 segments of every PG per zone)")
    prefix, last = base_ip.rsplit(".", 1)
    fleet = Fleet(directory)
    index = int(last)
    for zone in ZONES:
        for i in range(1, nodes_per_zone + 1):
            host = f"{prefix}.{index}"
            index += 1
            name = f"{zone}{i}"
            fleet.nodes[name] = NodeProc(name, zone, host, free_port(host))
    return fleet


async def wait_ready(nodes: list[NodeProc], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        for node in nodes:
            while True:
                try:
                    async with session.get(f"{node.url}/readyz") as resp:
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, OSError, TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"node {node.name} at {node.url} not ready in {timeout}s")
                await asyncio.sleep(0.1)


async def create_segments(fleet: Fleet, topology: Topology) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
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
) -> tuple[Fleet, Topology]:
    """Start a fleet in `directory` (or restart the stopped nodes of an existing one).

    `repair`: None for no automatic repair, else the supervisor's options
    (node_loss_timeout, max_concurrent, bandwidth). `fault_injection`: the nodes serve
    the fake disk corruption endpoints (`tidemark node run --enable-fault-injection`;
    kept for restarts of this fleet)."""
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / FLEET_FILE).exists():
        fleet = Fleet.load(directory)
        for name in fleet.nodes:
            if fleet.state(name) == "dead":
                fleet.spawn(fleet.nodes[name])
        await wait_ready(list(fleet.nodes.values()))
        if "repair" in fleet.options and pid_state(int(fleet.options.get("supervisor_pid", 0))) == "dead":
            fleet.spawn_supervisor()
        return fleet, load_topology(directory)
    fleet = build_fleet(directory, nodes_per_zone, base_ip)
    if gossip_interval is not None:
        fleet.options["gossip_interval"] = gossip_interval
    if scrub_interval is not None:
        fleet.options["scrub_interval"] = scrub_interval
    if fault_injection:
        fleet.options["fault_injection"] = True
    if backup:  # every node streams backups there (`tidemark node run --backup URL`)
        fleet.options["backup"] = backup
        fleet.options.update(backup_options or {})
    fleet.save()
    for node in fleet.nodes.values():
        fleet.spawn(node)
    try:
        await wait_ready(list(fleet.nodes.values()))
        topology = initial_topology(fleet, pgs, pages_per_pg, page_size)
        await create_segments(fleet, topology)
    except BaseException:
        fleet.down()
        raise
    save_topology(directory, topology)
    if repair is not None:
        fleet.options["repair"] = repair
        fleet.spawn_supervisor()
    return fleet, topology


__all__ = ["Fleet", "NodeProc", "TOPOLOGY_FILE", "up", "wait_ready", "pid_state"]
