"""The demo's bank workload through a real PostgreSQL driver (psycopg): transfer
clients on the writer, auditors summing the accounts on the writer and on a replica.

Each transfer is one transaction (debit, credit, a row in `transfers`), so the total
never changes in any committed state; a transfer counts as acknowledged only once its
COMMIT was answered. Clients and auditors are threads (psycopg's blocking calls release
the GIL), so the demo's faults, which block for a moment, never stall them."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

try:  # a test extra (and the bootstrap's venv has it); the container image may not
    import psycopg
except ImportError:  # pragma: no cover - `need_driver` says so in one line
    psycopg = None  # type: ignore[assignment]

ACCOUNTS, START = 100, 1_000
TOTAL = ACCOUNTS * START
SCHEMA = (
    "CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL)",
    "CREATE TABLE transfers (id TEXT PRIMARY KEY, src INTEGER NOT NULL, dst INTEGER NOT NULL, "
    "amount INTEGER NOT NULL)",
    "CREATE INDEX transfers_src ON transfers (src)",
)


def need_driver() -> None:
    if psycopg is None:
        raise RuntimeError("the demo talks to the database through psycopg: pip install 'psycopg[binary]' "
                           "(scripts/demo.sh installs it)")


@dataclass
class Endpoint:
    dsn: str
    password: str

    def connect(self, timeout: int = 2) -> psycopg.Connection:
        return psycopg.connect(self.dsn, password=self.password, autocommit=True, connect_timeout=timeout)


@dataclass
class BankStats:
    """Shared by the threads (appends and Counter updates under the GIL; read by the narrator)."""
    acked: list[tuple[float, str]] = field(default_factory=list)  # (monotonic time, transfer id)
    unknown: int = 0  # COMMIT not answered (the writer died or was fenced): outcome decided by recovery
    errors: Counter = field(default_factory=Counter)  # "writer 57P01", "replica OperationalError", …
    reads: dict[str, list[tuple[float, int, int]]] = field(default_factory=dict)  # role -> (t, sum, count)
    wrong: list[str] = field(default_factory=list)  # a total no committed state had: the invariant broke


def create_bank(writer: Endpoint) -> None:
    with writer.connect(timeout=10) as conn:
        for statement in SCHEMA:
            conn.execute(statement)
        with conn.transaction():
            conn.cursor().executemany("INSERT INTO accounts VALUES (%s, %s, %s)",
                                      [(i, f"owner-{i}", START) for i in range(1, ACCOUNTS + 1)])


def _error_key(role: str, exc: psycopg.Error) -> str:
    return f"{role} {exc.sqlstate or type(exc).__name__}"


def _transfer_client(writer: Endpoint, client: int, stats: BankStats, stop: threading.Event) -> None:
    rng = random.Random(client)
    conn: psycopg.Connection | None = None
    n = 0
    while not stop.is_set():
        in_commit = False
        try:
            if conn is None:
                conn = writer.connect()
            tid = f"c{client}-{n}"
            n += 1
            src, dst = rng.sample(range(1, ACCOUNTS + 1), 2)
            amount = rng.randint(1, 50)
            with conn.transaction():
                conn.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, src))
                conn.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, dst))
                conn.execute("INSERT INTO transfers VALUES (%s, %s, %s, %s)", (tid, src, dst, amount))
                in_commit = True  # leaving the block sends COMMIT
            stats.acked.append((time.monotonic(), tid))
        except psycopg.Error as exc:  # the writer died or waits: reconnect (bounded by connect_timeout)
            stats.errors[_error_key("writer", exc)] += 1
            stats.unknown += in_commit
            if conn is not None:
                conn.close()
            conn = None
            stop.wait(0.05)
    if conn is not None:
        conn.close()


def _auditor(role: str, endpoint: Endpoint, stats: BankStats, stop: threading.Event, every: float) -> None:
    """Sum the accounts again and again; any total but TOTAL is a broken invariant."""
    reads = stats.reads.setdefault(role, [])
    conn: psycopg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = endpoint.connect()
            total, count = conn.execute("SELECT sum(balance), count(*) FROM accounts").fetchone()
            reads.append((time.monotonic(), total, count))
            if (total, count) != (TOTAL, ACCOUNTS):
                stats.wrong.append(f"{role}: sum {total} over {count} accounts")
        except psycopg.Error as exc:  # killed instance, fault: not a wrong answer
            stats.errors[_error_key(role, exc)] += 1
            if conn is not None:
                conn.close()
            conn = None
        stop.wait(every)
    if conn is not None:
        conn.close()


@dataclass
class BankWorkload:
    writer: Endpoint
    replica: Endpoint | None
    clients: int = 4
    stats: BankStats = field(default_factory=BankStats)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        targets = [(_transfer_client, (self.writer, c, self.stats, self.stop)) for c in range(self.clients)]
        targets.append((_auditor, ("writer", self.writer, self.stats, self.stop, 0.2)))
        if self.replica is not None:
            targets.append((_auditor, ("replica", self.replica, self.stats, self.stop, 0.02)))
        for target, args in targets:
            thread = threading.Thread(target=target, args=args, daemon=True)  # daemon: a stuck call never hangs exit
            thread.start()
            self.threads.append(thread)

    def finish(self, timeout: float = 30.0) -> list[str]:
        """Stop and join every thread (bounded); returns the names of threads still stuck."""
        self.stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return [t.name for t in self.threads if t.is_alive()]

    def counts_since(self, t0: float) -> tuple[int, int]:
        """(acknowledged transfers, replica reads) since monotonic time t0."""
        acked = sum(1 for t, _ in self.stats.acked[-20000:] if t >= t0)
        reads = sum(1 for t, _, _ in self.stats.reads.get("replica", [])[-20000:] if t >= t0)
        return acked, reads


@dataclass
class BankCheck:
    """What the end of the run found on one instance."""
    role: str
    total: int | None = None
    accounts: int | None = None
    transfers: int | None = None
    missing: list[str] = field(default_factory=list)
    integrity: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return (self.error is None and self.total == TOTAL and self.accounts == ACCOUNTS and not self.missing
                and self.integrity == "ok")


def check_bank(role: str, endpoint: Endpoint, acked: list[str], timeout: float = 30.0,
               at_least: int = 0) -> BankCheck:
    """The invariant on one instance: total unchanged, every acknowledged transfer
    present, integrity_check ok. A replica is given until TIMEOUT to show AT_LEAST
    transfers (it trails the writer by milliseconds; more after a restart)."""
    check = BankCheck(role)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with endpoint.connect(timeout=5) as conn:
                with conn.transaction():  # one read point for the whole check on a replica
                    check.total, check.accounts = conn.execute(
                        "SELECT sum(balance), count(*) FROM accounts").fetchone()
                    present = {row[0] for row in conn.execute("SELECT id FROM transfers")}
                check.transfers = len(present)
                check.missing = [t for t in acked if t not in present]
                if len(present) >= at_least or time.monotonic() > deadline:
                    check.integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
                    check.error = None
                    return check
        except psycopg.Error as exc:
            check.error = f"{exc.sqlstate or type(exc).__name__}: {str(exc).strip()[:200]}"
            if time.monotonic() > deadline:
                return check
        time.sleep(0.2)
