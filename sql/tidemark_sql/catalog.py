"""What clients ask a PostgreSQL server about itself: version(), settings (SET, SHOW,
current_setting) and a small pg_catalog (types, namespaces, tables) as TEMP objects."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import apsw

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
]


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
        "current_setting": lambda name, *_missing_ok: current_setting(str(name)),
        "now": lambda: datetime.now(UTC).isoformat(sep=" "),
    }
    for name, fn in functions.items():
        conn.create_scalar_function(name, fn)
    for statement in SHIMS:
        conn.execute(statement)
    conn.executemany("INSERT INTO temp.pg_type (oid, typname, typnamespace, typarray, typtype, typbasetype, "
                     "typelem) VALUES (?, ?, 11, 0, 'b', 0, 0)", _TYPES)
    conn.executemany("INSERT INTO temp.pg_namespace VALUES (?, ?)", [(11, "pg_catalog"), (2200, "public")])
    conn.execute("INSERT INTO temp.pg_database VALUES (1, 'tidemark')")
