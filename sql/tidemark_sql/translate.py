"""PostgreSQL SQL text to SQLite: statement splitting, placeholders, a few rewrites,
and sqlglot (postgres -> sqlite) for what SQLite cannot parse as written."""

from __future__ import annotations

import re
from collections.abc import Iterator

import sqlglot
import sqlglot.errors

_SERIAL = re.compile(r"\b(?:big|small)?serial\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"[$@](\d+)")
_WITH_OPTIONS = re.compile(r"\)\s*with\s*\([^)]*\)\s*$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_]+")
# SQL's niladic functions are written without parentheses; SQLite would read a column.
_NILADIC = re.compile(r"(?<![\w.])(current_user|session_user|current_schema|current_catalog)\b(?!\s*\()",
                      re.IGNORECASE)


def _segments(sql: str) -> Iterator[tuple[bool, str]]:
    """(is_code, text) pieces: string literals, quoted identifiers, dollar-quoted
    strings and comments are not code."""
    i, n, start = 0, len(sql), 0
    while i < n:
        c = sql[i]
        end = -1
        if c in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == c:
                    if j + 1 < n and sql[j + 1] == c:
                        j += 2
                        continue
                    break
                j += 1
            end = min(j + 1, n)
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif sql.startswith("/*", i):
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        elif c == "$":
            m = re.match(r"\$([A-Za-z_]\w*)?\$", sql[i:])
            if m:
                j = sql.find(m.group(0), i + len(m.group(0)))
                end = n if j < 0 else j + len(m.group(0))
        if end < 0:
            i += 1
            continue
        if start < i:
            yield True, sql[start:i]
        yield False, sql[i:end]
        i = start = end
    if start < n:
        yield True, sql[start:]


def split_statements(sql: str) -> list[str]:
    """Statements of a simple query (empty ones dropped)."""
    out, current = [], []
    for is_code, text in _segments(sql):
        if not is_code:
            current.append(text)
            continue
        parts = text.split(";")
        for part in parts[:-1]:
            current.append(part)
            out.append("".join(current))
            current = []
        current.append(parts[-1])
    out.append("".join(current))
    return [s.strip() for s in out if _strip_comments(s).strip()]


def _strip_comments(sql: str) -> str:
    return "".join(t for code, t in _segments(sql) if code or not t.startswith(("--", "/*")))


def placeholders(sql: str) -> tuple[str, int]:
    """$N (and sqlglot's @N) to SQLite's ?N; returns the text and the highest N."""
    highest = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal highest
        highest = max(highest, int(m.group(1)))
        return f"?{m.group(1)}"

    text = "".join(_PLACEHOLDER.sub(sub, t) if code else t for code, t in _segments(sql))
    return text, highest


def keywords(sql: str, count: int = 2) -> list[str]:
    """The first `count` words of a statement, upper-case (comments skipped)."""
    code = " ".join(t for is_code, t in _segments(sql) if is_code)
    return [w.upper() for w in _WORD.findall(code)[:count]]


def prepare(sql: str) -> str:
    """Rewrites applied before SQLite sees a statement (cheap, text level)."""
    if _NILADIC.search(sql):
        sql = "".join(_NILADIC.sub(r"\1()", t) if code else t for code, t in _segments(sql))
    if "pg_catalog." in sql:  # the catalog shims are TEMP objects (catalog.py)
        sql = "".join(t.replace("pg_catalog.", "") if code else t for code, t in _segments(sql))
    head = keywords(sql, 2)
    if head[:1] == ["CREATE"] and ("TABLE" in head or "TEMP" in head or "TEMPORARY" in head):
        sql = "".join(_SERIAL.sub("INTEGER", t) if code else t for code, t in _segments(sql))
        sql = _WITH_OPTIONS.sub(")", sql)  # storage parameters (fillfactor=...) mean nothing here
    return sql


def transpile(sql: str) -> str | None:
    """sqlglot's SQLite rendering of a PostgreSQL statement, or None if it has none."""
    try:
        out = sqlglot.transpile(sql, read="postgres", write="sqlite", unsupported_level=sqlglot.ErrorLevel.IGNORE)
    except sqlglot.errors.SqlglotError:
        return None
    if len(out) != 1:
        return None
    text, _ = placeholders(prepare(out[0]))
    return text


def command_tag(head: list[str], changes: int, rows: int) -> str:
    verb = head[0] if head else ""
    if verb == "INSERT":
        return f"INSERT 0 {changes}"
    if verb in ("UPDATE", "DELETE"):
        return f"{verb} {changes}"
    if verb in ("SELECT", "VALUES", "WITH", "PRAGMA", "EXPLAIN", "SHOW"):
        return f"SELECT {rows}"
    if verb in ("CREATE", "DROP", "ALTER") and len(head) > 1:
        return f"{verb} {head[1]}"
    return verb or "OK"
