"""The narrated playground demo: a database on the fleet through faults.

A fleet with a writer (w1) and a read replica (r1), bank tables a user can look at
with psql, and a bank-transfer workload through psycopg (concurrent clients on the
writer, auditors summing the accounts on the writer and the replica) while it kills a
storage node, a whole zone, zone+1 (writes wait, replica reads go on), the writer
instance (the supervisor starts a new one: failover) and the replica, restoring each
fault before the next. At the end: the total unchanged on both instances, every
acknowledged transfer present, `PRAGMA integrity_check` ok, every segment at one SCL."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console

from tidemark_compute.topology import load_topology

from . import fleet as fleet_mod
from .bank import (
    ACCOUNTS,
    TOTAL,
    BankCheck,
    BankWorkload,
    Endpoint,
    check_bank,
    create_bank,
    need_driver,
)
from .instances import read_password
from .status import converged, fleet_status
from .workdir import fresh_workdir

NODE_LOSS_TIMEOUT = 600.0  # the demo restores every node itself: no segment rebuilds meanwhile
ZONE_PLUS_ONE_GRACE = 1.0  # a commit acked by 4 nodes just before the kill may be answered just after it


@dataclass
class Phase:
    name: str
    seconds: float
    acked: int  # transfers acknowledged during the phase
    replica_reads: int
    note: str = ""


@dataclass
class DemoResult:
    directory: str
    dsn: dict[str, str] = field(default_factory=dict)
    password_file: str = ""
    phases: list[Phase] = field(default_factory=list)
    failover_s: float | None = None  # SIGKILL w1 -> first acknowledged transfer
    replica_back_s: float | None = None  # SIGKILL r1 -> first replica read
    acked: int = 0
    unknown_outcome: int = 0
    checks: dict[str, BankCheck] = field(default_factory=dict)
    wrong_totals: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    converged: bool = False
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "ok": self.ok, "wall_s": round(self.wall_s, 1), "dir": self.directory, "dsn": self.dsn,
            "password_file": self.password_file, "accounts": ACCOUNTS, "total": TOTAL,
            "acked": self.acked, "unknown_outcome": self.unknown_outcome,
            "failover_s": self.failover_s, "replica_back_s": self.replica_back_s,
            "phases": [asdict(p) for p in self.phases],
            "checks": {k: {**asdict(v), "missing": len(v.missing), "ok": v.ok} for k, v in self.checks.items()},
            "wrong_totals": self.wrong_totals[:20], "errors": self.errors, "converged": self.converged,
            "problems": self.problems,
        }  # fmt: skip


class Demo:
    def __init__(self, directory: Path, phase_seconds: float, say: Callable[[str], None]) -> None:
        self.dir = directory
        self.phase_seconds = phase_seconds
        self._say = say
        self.t0 = time.monotonic()
        self.result = DemoResult(str(directory))
        self.fleet: fleet_mod.Fleet | None = None
        self.bank: BankWorkload | None = None

    def say(self, text: str) -> None:
        self._say(f"[dim]{time.monotonic() - self.t0:6.1f}s[/dim]  {text}")

    def problem(self, text: str) -> None:
        self.result.problems.append(text)
        self.say(f"  [red]problem: {text}[/red]")

    # -- phases --------------------------------------------------------------------
    async def watch(self, name: str, note: str = "") -> Phase:
        """Report transfers/s and replica reads/s once a second for one phase."""
        assert self.bank is not None
        start = time.monotonic()
        for _ in range(max(1, round(self.phase_seconds))):
            tick = time.monotonic()
            await asyncio.sleep(self.phase_seconds / max(1, round(self.phase_seconds)))
            acked, reads = self.bank.counts_since(tick)
            errors = sum(self.bank.stats.errors.values())
            self.say(f"  {name:<22} {acked:4d} transfers/s acknowledged  {reads:4d} replica reads/s"
                     f"  (client errors so far: {errors})")
        acked, reads = self.bank.counts_since(start)
        phase = Phase(name, round(time.monotonic() - start, 2), acked, reads, note)
        self.result.phases.append(phase)
        return phase

    async def kill(self, *names: str) -> float:
        """SIGKILL these processes (nodes or instances, pids as fleet.json has them now)."""
        fleet = fleet_mod.Fleet.load(self.dir)  # the supervisor may have restarted an instance
        for name in names:
            await asyncio.to_thread(fleet.kill, name)
        return time.monotonic()

    async def restore(self, *names: str) -> None:
        fleet = fleet_mod.Fleet.load(self.dir)
        for name in names:
            fleet.spawn(fleet.nodes[name])
        await fleet_mod.wait_ready([fleet.nodes[n] for n in names])
        self.say(f"[bold green]Restarted {', '.join(names)}[/bold green] with their data (gossip fills their holes)")

    async def first_after(self, killed: float, role: str, timeout: float = 30.0) -> float | None:
        """Seconds from KILLED to the first acknowledged transfer (role writer) or replica read."""
        assert self.bank is not None
        deadline = killed + timeout
        while time.monotonic() < deadline:
            times = ([t for t, _ in self.bank.stats.acked[-50:]] if role == "writer"
                     else [t for t, _, _ in self.bank.stats.reads.get("replica", [])[-50:]])
            after = [t for t in times if t > killed]
            if after:
                return round(min(after) - killed, 2)
            await asyncio.sleep(0.05)
        return None

    async def scenario(self) -> None:
        await self.watch("healthy fleet")

        self.say("[bold yellow]SIGKILL storage node a1[/bold yellow]: 5 of 6 segments left, writes need 4")
        await self.kill("a1")
        if (await self.watch("node a1 down")).acked == 0:
            self.problem("no transfer acknowledged with one node down")
        await self.restore("a1")

        self.say("[bold yellow]SIGKILL a1 and a2[/bold yellow]: the whole of zone a is down, 4 of 6 left")
        await self.kill("a1", "a2")
        if (await self.watch("zone a down")).acked == 0:
            self.problem("no transfer acknowledged with zone a down")
        await self.restore("a1", "a2")

        self.say("[bold red]SIGKILL a1, a2 and b1[/bold red]: zone+1, 3 of 6 left: writes must wait, "
                 "the replica reads on from the survivors")
        killed = await self.kill("a1", "a2", "b1")
        phase = await self.watch("zone+1 down", "writes wait; replica reads go on")
        assert self.bank is not None
        late = sum(1 for t, _ in self.bank.stats.acked[-20000:] if t > killed + ZONE_PLUS_ONE_GRACE)
        if late:
            self.problem(f"{late} transfers acknowledged without a write quorum (zone+1 down)")
        if phase.replica_reads == 0:
            self.problem("replica reads stopped during zone+1")
        self.say(f"  writes waited ({phase.acked} acknowledged, all in flight at the kill); "
                 f"the replica answered {phase.replica_reads} reads meanwhile")
        await self.restore("a1", "a2", "b1")
        resumed = await self.first_after(time.monotonic() - 0.001, "writer")
        self.say(f"  writes resumed {resumed} s after the restart" if resumed is not None else "  writes did not resume")

        self.say("[bold red]SIGKILL the writer instance w1[/bold red]: the supervisor starts a new writer "
                 "(Writer.open: recovery + seal, which fences the old one)")
        killed = await self.kill("w1")
        self.result.failover_s = await self.first_after(killed, "writer")
        if self.result.failover_s is None or self.result.failover_s >= 10:
            self.problem(f"writes not accepted again within 10 s of the writer kill ({self.result.failover_s})")
        else:
            self.say(f"  [green]failover: first transfer acknowledged {self.result.failover_s} s after the kill[/green]")
        await self.watch("after failover")

        self.say("[bold yellow]SIGKILL the replica r1[/bold yellow]: the supervisor starts it again; "
                 "it follows the new writer")
        killed = await self.kill("r1")
        self.result.replica_back_s = await self.first_after(killed, "replica")
        if self.result.replica_back_s is None:
            self.problem("the replica did not serve again within 30 s of its kill")
        else:
            self.say(f"  replica reads again {self.result.replica_back_s} s after its kill")
        await self.watch("all restored")

    # -- the end -------------------------------------------------------------------
    async def verify(self, writer: Endpoint, replica: Endpoint) -> None:
        assert self.bank is not None
        stats = self.bank.stats
        acked = [tid for _, tid in stats.acked]
        r = self.result
        r.acked, r.unknown_outcome = len(acked), stats.unknown
        r.wrong_totals, r.errors = list(stats.wrong), dict(stats.errors)
        self.say(f"Workload stopped: {r.acked} transfers acknowledged, {r.unknown_outcome} with an unknown "
                 f"outcome (COMMIT unanswered: the writer died), {len(stats.reads.get('replica', []))} replica "
                 f"and {len(stats.reads.get('writer', []))} writer totals read")
        if stats.wrong:
            self.problem(f"{len(stats.wrong)} totals other than {TOTAL}: {stats.wrong[:3]}")
        w = await asyncio.to_thread(check_bank, "writer", writer, acked)
        rep = await asyncio.to_thread(check_bank, "replica", replica, acked, 30.0, w.transfers or 0)
        r.checks = {"writer": w, "replica": rep}
        for c in (w, rep):
            line = (f"  {c.role:<7}: total {c.total} over {c.accounts} accounts, {c.transfers} transfers, "
                    f"{len(c.missing)} acknowledged missing, integrity_check {c.integrity}")
            self.say(line + (f", error {c.error}" if c.error else ""))
            if not c.ok:
                self.problem(f"the {c.role}'s final check failed")
        self.say("Waiting for gossip to bring every segment to the same SCL ...")
        deadline = time.monotonic() + 60
        status: dict = {}
        while time.monotonic() < deadline:
            status = await fleet_status(fleet_mod.Fleet.load(self.dir), load_topology(self.dir))
            if converged(status):
                break
            await asyncio.sleep(0.5)
        r.converged = bool(status) and converged(status)
        for pg in status.get("pgs", []):
            self.say(f"  pg {pg['id']}: {pg['complete_segments']}/6 segments complete, "
                     f"SCLs {sorted(set(pg['scl'].values()))}")
        if not r.converged:
            self.problem("segments did not converge within 60 s")


def _psql_lines(writer: Endpoint) -> list[str]:
    """What psql itself shows (if installed): the tables are ordinary PostgreSQL tables to it."""
    psql = shutil.which("psql")
    if psql is None:
        return []
    query = ("SELECT count(*) AS accounts, sum(balance) AS total, "
             "(SELECT count(*) FROM transfers) AS transfers FROM accounts")
    try:
        out = subprocess.run([psql, writer.dsn, "-X", "-c", query], capture_output=True, text=True, timeout=20,
                             env={"PGPASSWORD": writer.password, "PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired):
        return []
    return (out.stdout or out.stderr).strip().splitlines()


async def run_demo(directory: Path, phase_seconds: float = 4.0, base_ip: str = "127.0.0.10", clients: int = 4,
                   keep: bool = False, console: Console | None = None) -> DemoResult:
    """The whole demo; returns its result (`ok`: no problem found). The fleet is torn
    down at the end unless KEEP."""
    need_driver()
    console = console or Console(highlight=False, soft_wrap=True)
    demo = Demo(directory, phase_seconds, console.print)
    fresh_workdir(directory)
    demo.say("[bold]Starting a fleet[/bold]: 6 storage nodes in zones a/b/c, 4 protection groups, "
             "the writer w1 and the read replica r1 (PostgreSQL wire protocol), the supervisor")
    repair = {"node_loss_timeout": NODE_LOSS_TIMEOUT, "max_concurrent": 4, "bandwidth": 0}
    fleet, topology = await fleet_mod.up(directory, 2, 4, 1024, 4096, base_ip, gossip_interval=0.5,
                                         repair=repair, instances=2)
    try:
        for node in fleet.nodes.values():
            demo.say(f"  node {node.name} zone {node.zone} at {node.url}")
        for pg, m in sorted(topology.memberships.items()):
            demo.say(f"  pg {pg}: segments on {', '.join(m.members)}")
        w1, r1 = fleet.instances["w1"], fleet.instances["r1"]
        password_file = Path(w1.password_file)
        demo.result.dsn = {"w1": w1.dsn, "r1": r1.dsn}
        demo.result.password_file = str(password_file)
        writer = Endpoint(w1.dsn, read_password(password_file))
        replica = Endpoint(r1.dsn, read_password(password_file))
        demo.say(f"  w1 (writer)  {w1.dsn}")
        demo.say(f"  r1 (replica) {r1.dsn}   (reads only: writes get 25006)")
        demo.say("[bold]Connect with psql[/bold] while it runs (the password is in the file, user:password):\n"
                 f"    export PGPASSWORD=$(cut -d: -f2- {password_file})\n"
                 f"    psql '{w1.dsn}' -c 'SELECT * FROM accounts ORDER BY id LIMIT 5'\n"
                 f"    psql '{r1.dsn}' -c 'SELECT sum(balance) FROM accounts'")
        await asyncio.to_thread(create_bank, writer)
        demo.say(f"Created tables accounts ({ACCOUNTS} rows, total {TOTAL}) and transfers; "
                 f"{clients} clients transfer money on w1, auditors sum the accounts on w1 and r1")
        demo.bank = BankWorkload(writer, replica, clients)
        demo.bank.start()
        try:
            await demo.scenario()
        finally:
            stuck = await asyncio.to_thread(demo.bank.finish)
        if stuck:
            demo.problem(f"{len(stuck)} client threads did not stop within 30 s")
        await demo.verify(writer, replica)
        for line in await asyncio.to_thread(_psql_lines, writer):
            demo.say(f"  psql> {line}")
    finally:
        if keep:
            demo.say(f"Left running (--keep): `tidemark playground down --dir {directory}` stops it")
        else:
            demo.say("Tearing the fleet down")
            fleet_mod.Fleet.load(directory).down()
        demo.result.wall_s = time.monotonic() - demo.t0
    r = demo.result
    verdict = ("[bold green]PASS[/bold green]: total unchanged on the writer and the replica, every "
               f"acknowledged transfer present ({r.acked}), integrity_check ok, failover in {r.failover_s} s"
               if r.ok else f"[bold red]FAIL[/bold red]: {'; '.join(r.problems)}")
    demo.say(f"Verdict: {verdict} ({r.wall_s:.0f} s)")
    return r
