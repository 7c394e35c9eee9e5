"""What clients ask a PostgreSQL server about itself: version(), settings (SET, SHOW,
current_setting), a small pg_catalog (types, namespaces, tables) as TEMP objects, the
answers to known catalog probes (pgbench's) and generate_series."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import apsw
import apsw.ext

SERVER_VERSION = "15.0"

DEFAULTS = {
    "server_version": SERVER_VERSION,
    "server_version_num": "150000",
    "server_encoding": "UTF8",
    "client_encoding": "UTF8",
    "DateStyle": "ISO, MDY",
    "integer_datetimes": "on",
    "IntervalStyle": "postgres",
    "TimeZone": "UTC",
    "standard_conforming_strings": "on",
    "is_superuser": "on",
    "transaction_isolation": "serializable",
    "default_transaction_isolation": "serializable",
    "transaction_read_only": "off",
    "search_path": '"$user", public',
    "max_identifier_length": "63",
}
REPORTED = ("server_version", "server_encoding", "client_encoding", "DateStyle", "integer_datetimes",
            "IntervalStyle", "TimeZone", "standard_conforming_strings", "is_superuser", "application_name")

_SET = re.compile(r"^\s*set\s+(?:session\s+|local\s+)?([\w.]+)\s*(?:=|\bto\b)\s*(.*?)\s*;?\s*$",
                  re.IGNORECASE | re.DOTALL)
_SET_TZ = re.compile(r"^\s*set\s+(?:session\s+|local\s+)?time\s+zone\s+(.*?)\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_SHOW = re.compile(r"^\s*show\s+([\w.]+)\s*;?\s*$", re.IGNORECASE)
_RESET = re.compile(r"^\s*reset\s+([\w.]+)\s*;?\s*$", re.IGNORECASE)

_TYPES = [(16, "bool"), (17, "bytea"), (20, "int8"), (21, "int2"), (23, "int4"), (25, "text"),
          (700, "float4"), (701, "float8"), (705, "unknown"), (1043, "varchar"), (1700, "numeric"),
          (1114, "timestamp"), (1184, "timestamptz"), (1082, "date"), (2950, "uuid"), (114, "json"),
          (3802, "jsonb"), (26, "oid"), (19, "name"), (18, "char")]

SHIMS = [
    "CREATE TEMP TABLE pg_type (oid INTEGER PRIMARY KEY, typname TEXT, typnamespace INTEGER, "
    "typarray INTEGER, typtype TEXT, typbasetype INTEGER, typelem INTEGER)",
    "CREATE TEMP TABLE pg_namespace (oid INTEGER PRIMARY KEY, nspname TEXT)",
    "CREATE TEMP TABLE pg_database (oid INTEGER PRIMARY KEY, datname TEXT)",
    "CREATE TEMP VIEW pg_tables AS SELECT 'public' AS schemaname, name AS tablename, "
    "'tidemark' AS tableowner FROM main.sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    "CREATE TEMP VIEW pg_class AS SELECT rowid AS oid, name AS relname, 2200 AS relnamespace, "
    "CASE type WHEN 'table' THEN 'r' WHEN 'index' THEN 'i' WHEN 'view' THEN 'v' END AS relkind "
    "FROM main.sqlite_master",
    # Nothing is partitioned or inherits: empty, so catalog joins on them find nothing.
    "CREATE TEMP TABLE pg_partitioned_table (partrelid INTEGER, partstrat TEXT)",
    "CREATE TEMP TABLE pg_inherits (inhrelid INTEGER, inhparent INTEGER, inhseqno INTEGER)",
]

# pgbench (15) asks at start-up whether pgbench_accounts is partitioned. Its query uses
# LATERAL and a column alias list (o(n)), which SQLite cannot parse; the answer from the
# shims is the same query without them: the table's search_path position ("pg_catalog",
# "public": 2), NULL strategy (not partitioned), 0 partitions; no row if there is no table.
_PGBENCH_PARTITION_PROBE = (
    "select o.n, p.partstrat, pg_catalog.count(i.inhparent) "
    "from pg_catalog.pg_class as c "
    "join pg_catalog.pg_namespace as n on (n.oid = c.relnamespace) "
    "cross join lateral (select pg_catalog.array_position(pg_catalog.current_schemas(true), n.nspname)) as o(n) "
    "left join pg_catalog.pg_partitioned_table as p on (p.partrelid = c.oid) "
    "left join pg_catalog.pg_inherits as i on (c.oid = i.inhparent) "
    "where c.relname = 'pgbench_accounts' and o.n is not null "
    "group by 1, 2 "
    "order by 1 asc "
    "limit 1"
)
_PGBENCH_PARTITION_ANSWER = (
    "SELECT CASE n.nspname WHEN 'pg_catalog' THEN 1 WHEN 'public' THEN 2 END AS n, p.partstrat AS partstrat, "
    "count(i.inhparent) AS count FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_partitioned_table AS p ON p.partrelid = c.oid LEFT JOIN pg_inherits AS i ON c.oid = i.inhparent "
    "WHERE c.relname = 'pgbench_accounts' AND n.nspname IN ('pg_catalog', 'public') GROUP BY 1, 2 ORDER BY 1 LIMIT 1"
)


def _normal(sql: str) -> str:
    return " ".join(sql.split()).rstrip(";").strip().lower()


CANNED = {_normal(_PGBENCH_PARTITION_PROBE): _PGBENCH_PARTITION_ANSWER}


def canned(sql: str) -> str | None:
    """The SQLite text answering a known client catalog query, or None."""
    return CANNED.get(_normal(sql)) if len(sql) > 200 else None


def generate_series(start: int | float | None, stop: int | float | None, step: int | float = 1) -> Iterator[tuple]:
    """PostgreSQL's generate_series(start, stop[, step]) for numbers (not timestamps), as
    an apsw table-valued function with one column, `value` (SQLite's own extension is
    not in apsw's build). NULL arguments give no rows, as in PostgreSQL."""
    if start is None or stop is None or step is None:
        return
    if step == 0:
        raise ValueError("step size cannot equal zero")
    if all(isinstance(v, int) for v in (start, stop, step)):
        yield from ((v,) for v in range(start, stop + (1 if step > 0 else -1), step))  # type: ignore[arg-type]
        return
    value = start
    while (value <= stop) if step > 0 else (value >= stop):
        yield (value,)
        value += step


generate_series.columns = ("value",)  # type: ignore[attr-defined]
generate_series.column_access = apsw.ext.VTColumnAccess.By_Index  # type: ignore[attr-defined]


def unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def parse_set(sql: str) -> tuple[str, str] | None:
    m = _SET_TZ.match(sql)
    if m:
        return "TimeZone", unquote(m.group(1))
    m = _SET.match(sql)
    return (m.group(1), unquote(m.group(2))) if m else None


def parse_show(sql: str) -> str | None:
    m = _SHOW.match(sql)
    return m.group(1) if m else None


def parse_reset(sql: str) -> str | None:
    m = _RESET.match(sql)
    return m.group(1) if m else None


def install(conn: apsw.Connection, current_setting: Callable[[str], str | None]) -> None:
    """SQLite thread: functions and TEMP catalog tables a PostgreSQL client may query."""
    version = f"PostgreSQL {SERVER_VERSION} (Tidemark: SQLite {apsw.sqlite_lib_version()} over the fleet)"
    functions: dict[str, Callable[..., Any]] = {
        "version": lambda: version,
        "current_database": lambda: "tidemark",
        "current_schema": lambda: "public",
        "current_user": lambda: current_setting("session_user") or "tidemark",
        "session_user": lambda: current_setting("session_user") or "tidemark",
        "current_catalog": lambda: "tidemark",
        "pg_backend_pid": lambda: 1,
        "pg_is_in_recovery": lambda: 0,
        "pg_advisory_unlock_all": lambda: None,  # no advisory locks: none to release (pool resets)
        "current_setting": lambda name, *_missing_ok: current_setting(str(name)),
        "now": lambda: datetime.now(UTC).isoformat(sep=" "),
    }
    for name, fn in functions.items():
        conn.create_scalar_function(name, fn)
    apsw.ext.make_virtual_module(conn, "generate_series", generate_series)
    for statement in SHIMS:
        conn.execute(statement)
    conn.executemany("INSERT INTO temp.pg_type (oid, typname, typnamespace, typarray, typtype, typbasetype, "
                     "typelem) VALUES (?, ?, 11, 0, 'b', 0, 0)", _TYPES)
    conn.executemany("INSERT INTO temp.pg_namespace VALUES (?, ?)", [(11, "pg_catalog"), (2200, "public")])
    conn.execute("INSERT INTO temp.pg_database VALUES (1, 'tidemark')")
