"""Fixtures for the SQL tier: a fake writer (fast protocol tests), a real fleet, an
instance on 127.0.230+.x (a range no other suite uses)."""

from __future__ import annotations

import contextlib
import itertools
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sqlfakes import FakeWriter  # noqa: E402

from tidemark_compute.reader import Reader  # noqa: E402
from tidemark_compute.topology import load_topology, membership_source, record_volume_epoch  # noqa: E402
from tidemark_compute.writer import Writer  # noqa: E402
from tidemark_playground import fleet as fleet_mod  # noqa: E402
from tidemark_sql.instance import Instance  # noqa: E402
from tidemark_sql.replica import ReplicaInstance  # noqa: E402
from tidemark_sql.scram import parse_credentials  # noqa: E402

USER, PASSWORD = "tm", "s3cret-pass"
_subnet = itertools.count(230)  # one 127.0.N.x range per fleet test (N < 256)
_fake_hosts = itertools.count(2)  # fake-writer instances share 127.0.229.x


def dsn_of(instance: Instance, password: str = PASSWORD, **extra: str) -> str:
    host, port = instance.address  # type: ignore[misc]
    params = {"host": host, "port": str(port), "user": USER, "password": password, "dbname": "tidemark",
              "connect_timeout": "10", **extra}
    return " ".join(f"{k}={v}" for k, v in params.items())


def tm(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """`tidemark playground ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "tidemark_cli.main", "playground", *args],
                          capture_output=True, text=True, timeout=timeout)


def all_pids(directory: Path) -> list[int]:
    fleet = fleet_mod.Fleet.load(directory)
    return ([n.pid for n in fleet.nodes.values()] + [i.pid for i in fleet.instances.values()]
            + [int(fleet.options.get("supervisor_pid", 0))])


@pytest.fixture
def playground_dir(tmp_path: Path):
    """A playground directory; whatever was started in it is stopped afterwards."""
    directory = tmp_path / "pg"
    try:
        yield directory
    finally:
        if (directory / "fleet.json").exists():
            tm("down", "--dir", str(directory), timeout=60)
            for pid in all_pids(directory):  # a failed `down` must not leave processes behind
                if pid and fleet_mod.pid_state(pid) != "dead":
                    os.kill(pid, 9)


@pytest.fixture
def host() -> str:
    return f"127.0.{next(_subnet)}.5"


@pytest.fixture
async def fake_instance():
    host = f"127.0.229.{next(_fake_hosts) % 250 + 2}"
    writer = FakeWriter()
    instance = await Instance.start(writer, host, 0, parse_credentials(f"{USER}:{PASSWORD}"),
                                    max_connections=8, max_message=64 * 1024, lock_timeout=1.0,
                                    idle_in_transaction_timeout=2.0)
    try:
        yield instance
    finally:
        await instance.close()


@pytest.fixture
async def fleet(tmp_path: Path, host: str):
    base_ip = host.rsplit(".", 1)[0] + ".10"
    fl, _topology = await fleet_mod.up(tmp_path / "fleet", 2, 4, 256, 4096, base_ip, gossip_interval=0.3)
    try:
        yield fl
    finally:
        fl.down()


async def open_writer(fl: fleet_mod.Fleet) -> Writer:
    topology = load_topology(fl.dir)
    writer = await Writer.open(topology, timeout=30, membership_source=membership_source(fl.dir))
    record_volume_epoch(fl.dir, topology.volume_epoch)
    return writer


async def start_instance(fl: fleet_mod.Fleet, host: str, **options) -> Instance:
    writer = await open_writer(fl)
    return await Instance.start(writer, host, 0, parse_credentials(f"{USER}:{PASSWORD}"), **options)


@contextlib.asynccontextmanager
async def writer_and_replica(directory: Path, pages_per_pg: int, base_ip: str, writer_host: str,
                             replica_host: str) -> AsyncIterator[tuple[Instance, ReplicaInstance]]:
    """A storage fleet (2 nodes per zone, 4 PGs), a writer instance and a replica
    following its feed."""
    fl, _topology = await fleet_mod.up(directory, 2, 4, pages_per_pg, 4096, base_ip, gossip_interval=0.3)
    creds = parse_credentials(f"{USER}:{PASSWORD}")
    writer = replica = None
    try:
        writer = await Instance.start(await open_writer(fl), writer_host, 0, creds, admin_port=0)
        feed = f"ws{writer.admin.url[4:]}/v1/feed"
        reader = Reader(load_topology(fl.dir), lambda: feed, membership_source(fl.dir))
        await reader.start(timeout=30)
        replica = await ReplicaInstance.start(reader, replica_host, 0, creds, admin_port=0)
        yield writer, replica
    finally:
        if replica is not None:
            await replica.close()
        if writer is not None:
            await writer.close()
        fl.down()
