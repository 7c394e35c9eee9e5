"""PostgreSQL SQL text to SQLite: statement splitting, placeholders, a few rewrites,
and sqlglot (postgres -> sqlite) for what SQLite cannot parse as written."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator

import sqlglot
import sqlglot.errors
from sqlglot import exp

from . import catalog

_SERIAL = re.compile(r"\b(?:big|small)?serial\b", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"[$@](\d+)")
_WITH_OPTIONS = re.compile(r"\)\s*with\s*\([^)]*\)\s*$", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_]+")
# SQL's niladic functions are written without parentheses; SQLite would read a column.
_NILADIC = re.compile(r"(?<![\w.])(current_user|session_user|current_schema|current_catalog)\b(?!\s*\()",
                      re.IGNORECASE)


# Where a piece that is not code may start; everything between two of them is code.
_NOT_CODE_START = re.compile(r"""['"]|--|/\*|\$(?:[A-Za-z_]\w*)?\$""")
_QUOTED = {"'": re.compile(r"'(?:''|[^'])*'?"), '"': re.compile(r'"(?:""|[^"])*"?')}


@functools.lru_cache(maxsize=512)
def _segments_of(sql: str) -> tuple[tuple[bool, str], ...]:
    """(is_code, text) pieces: string literals, quoted identifiers, dollar-quoted
    strings and comments are not code. Cached: a statement is looked at several times
    on its way to SQLite (split, keywords, placeholders)."""
    pieces: list[tuple[bool, str]] = []
    n, start = len(sql), 0
    while (m := _NOT_CODE_START.search(sql, start)) is not None:
        i, token = m.start(), m.group(0)
        if token in _QUOTED:
            end = _QUOTED[token].match(sql, i).end()  # type: ignore[union-attr]
        elif token == "--":
            j = sql.find("\n", i)
            end = n if j < 0 else j
        elif token == "/*":
            j = sql.find("*/", i + 2)
            end = n if j < 0 else j + 2
        else:  # $tag$ … $tag$
            j = sql.find(token, i + len(token))
            end = n if j < 0 else j + len(token)
        if start < i:
            pieces.append((True, sql[start:i]))
        pieces.append((False, sql[i:end]))
        start = end
    if start < n:
        pieces.append((True, sql[start:]))
    return tuple(pieces)


def _segments(sql: str) -> Iterator[tuple[bool, str]]:
    return iter(_segments_of(sql))


def _split(sql: str, sep: str) -> list[str]:
    """`sql` cut at every `sep` that is code (not in a literal, identifier or comment)."""
    out, current = [], []
    for is_code, text in _segments(sql):
        if not is_code:
            current.append(text)
            continue
        parts = text.split(sep)
        for part in parts[:-1]:
            current.append(part)
            out.append("".join(current))
            current = []
        current.append(parts[-1])
    out.append("".join(current))
    return out


def split_statements(sql: str) -> list[str]:
    """Statements of a simple query (empty ones dropped)."""
    return [s.strip() for s in _split(sql, ";") if _strip_comments(s).strip()]


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
    if "pg_catalog." in sql:
        canned = catalog.canned(sql)  # a client's known catalog probe (pgbench's partition check)
        if canned is not None:
            return canned
    if _NILADIC.search(sql):
        sql = "".join(_NILADIC.sub(r"\1()", t) if code else t for code, t in _segments(sql))
    if "pg_catalog." in sql:  # the catalog shims are TEMP objects (catalog.py)
        sql = "".join(t.replace("pg_catalog.", "") if code else t for code, t in _segments(sql))
    head = keywords(sql, 2)
    verb = head[0] if head else ""
    if verb == "CREATE" and ("TABLE" in head or "TEMP" in head or "TEMPORARY" in head):
        sql = "".join(_SERIAL.sub("INTEGER", t) if code else t for code, t in _segments(sql))
        sql = _WITH_OPTIONS.sub(")", sql)  # storage parameters (fillfactor=...) mean nothing here
    elif verb == "DROP":
        sql = _drop_many(sql)
    elif verb == "TRUNCATE":
        sql = _truncate(sql)
    elif verb == "ALTER":
        sql = _add_primary_key(sql)
    elif verb == "VACUUM":
        sql = _vacuum(sql)
    if _GENERATE_SERIES.search(sql):
        sql = "".join(_alias_generate_series(t) if code else t for code, t in _segments(sql))
    return sql


# -- rewrites for what PostgreSQL clients (pgbench -i) send and SQLite cannot parse ------
_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][\w$]*)'
_NAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})?"  # [schema.]name
_IS_NAME = re.compile(rf"^\s*{_NAME}\s*$")
_DROP = re.compile(r"^\s*drop\s+(table|index|view)\s+(if\s+exists\s+)?(.*?)(?:\s+restrict)?\s*;?\s*$",
                   re.IGNORECASE | re.DOTALL)
_TRUNCATE = re.compile(r"^\s*truncate\s+(?:table\s+)?(?:only\s+)?(.*?)"
                       r"(?:\s+(?:restart|continue)\s+identity)?(?:\s+restrict)?\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_ADD_PK = re.compile(rf"^\s*alter\s+table\s+(?:if\s+exists\s+)?(?:only\s+)?({_NAME})\s+add\s+"
                     rf"(?:constraint\s+({_IDENT})\s+)?primary\s+key\s*(\([^)]*\))"
                     rf"(?:\s+using\s+index\s+tablespace\s+{_IDENT})?\s*;?\s*$", re.IGNORECASE | re.DOTALL)
_VACUUM = re.compile(r"^\s*vacuum\b\s*(\([^)]*\))?\s*((?:(?:full|freeze|verbose|analyze|analyse)\b\s*)*)(.*?)\s*;?\s*$",
                     re.IGNORECASE | re.DOTALL)
_GENERATE_SERIES = re.compile(r"\b(?:from|join)\s+generate_series\s*\(", re.IGNORECASE)
_ALIAS = re.compile(rf"\s+(?:as\s+)?({_IDENT})(?:\s*\(\s*({_IDENT})\s*\))?", re.IGNORECASE)
_NOT_ALIAS = {"WHERE", "JOIN", "ON", "LEFT", "RIGHT", "INNER", "OUTER", "CROSS", "NATURAL", "FULL", "GROUP",
              "ORDER", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT", "HAVING", "WINDOW", "USING", "WITH"}
# What pgbench -i sends first; PostgreSQL does it in one statement, so the pieces run
# under one savepoint (one SQLite transaction when outside BEGIN): all or nothing.
_SPLIT_BEGIN, _SPLIT_END = "SAVEPOINT tidemark_split; ", "; RELEASE tidemark_split"
NOTHING = ""  # an empty statement: SQLite runs nothing and answers no columns


def _names(text: str) -> list[str] | None:
    """A comma-separated list of plain [schema.]names, or None (then no rewrite)."""
    names = [n.strip() for n in _split(text, ",")]
    return names if names and all(_IS_NAME.match(n) for n in names) else None


def _drop_many(sql: str) -> str:
    """DROP TABLE a, b: SQLite drops one object per statement."""
    m = _DROP.match(sql)
    names = _names(m.group(3)) if m else None
    if m is None or names is None or len(names) < 2:
        return sql
    kind, if_exists = m.group(1).upper(), "IF EXISTS " if m.group(2) else ""
    return _SPLIT_BEGIN + "; ".join(f"DROP {kind} {if_exists}{n}" for n in names) + _SPLIT_END


def _truncate(sql: str) -> str:
    """TRUNCATE [TABLE] a, b [RESTART IDENTITY]: SQLite has no TRUNCATE; a DELETE with no
    WHERE is its truncate optimisation. A rowid table restarts at max(rowid)+1 = 1 when
    empty, so RESTART IDENTITY holds. CASCADE is not rewritten (refused as a syntax error)."""
    m = _TRUNCATE.match(sql)
    names = _names(m.group(1)) if m else None
    if names is None:
        return sql
    deletes = "; ".join(f"DELETE FROM {n}" for n in names)
    return deletes if len(names) == 1 else _SPLIT_BEGIN + deletes + _SPLIT_END


def _add_primary_key(sql: str) -> str:
    """ALTER TABLE t ADD [CONSTRAINT c] PRIMARY KEY (cols): SQLite cannot add a primary
    key to a table; a UNIQUE index named as PostgreSQL would name the key (t_pkey) gives
    the same lookups and the same 23505 on duplicates. It does not add NOT NULL."""
    m = _ADD_PK.match(sql)
    if m is None:
        return sql
    table, constraint, columns = m.group(1), m.group(2), m.group(3)
    if constraint is None:
        base = _split(table, ".")[-1].strip().strip('"').replace('"', '""')
        constraint = f'"{base}_pkey"'
    return f"CREATE UNIQUE INDEX {constraint} ON {table} {columns}"


def _vacuum(sql: str) -> str:
    """VACUUM [(opts)] [FULL|ANALYZE|...] [tables]: SQLite's VACUUM rewrites the whole
    file and takes no table. Without tables (plain or FULL) it is SQLite's VACUUM; with
    tables there are no dead tuples to reclaim, so only ANALYZE (if asked) runs."""
    m = _VACUUM.match(sql)
    if m is None:
        return sql
    options = f"{m.group(1) or ''} {m.group(2)}".lower()
    analyze = "analyze" in options or "analyse" in options
    tables = re.sub(r"\([^)]*\)", "", m.group(3))  # column lists: ANALYZE takes a table only
    if not tables.strip():
        return "ANALYZE" if analyze and "full" not in options else "VACUUM"
    names = _names(tables)
    if names is None:
        return sql
    return "; ".join(f"ANALYZE {n}" for n in names) if analyze else NOTHING


def _alias_generate_series(code: str) -> str:
    """`FROM generate_series(a, b) [AS] x` names the column x in PostgreSQL; SQLite's
    table-valued function (catalog.py) has the column `value`, so alias it in a subquery."""
    out, pos = [], 0
    for m in _GENERATE_SERIES.finditer(code):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        alias = _ALIAS.match(code, i)
        if depth or alias is None or alias.group(1).upper() in _NOT_ALIAS:
            continue
        call_start = m.start() + m.group(0).lower().index("generate_series")
        call = code[call_start:i]
        column = alias.group(2) or alias.group(1)
        out.append(code[pos:call_start])
        out.append(f"(SELECT value AS {column} FROM {call}) AS {alias.group(1)}")
        pos = alias.end()
    out.append(code[pos:])
    return "".join(out)


# PostgreSQL types whose values SQLite keeps as text but whose names have NUMERIC
# affinity: CAST('{"a": 1}' AS JSON) would be 0 and CAST('2024-…+00' AS TIMESTAMPTZ) 2024.
_TEXT_CASTS = {exp.DataType.Type.JSON, exp.DataType.Type.JSONB, exp.DataType.Type.UUID,
               exp.DataType.Type.TIMESTAMPTZ, exp.DataType.Type.TIMESTAMPLTZ, exp.DataType.Type.TIME,
               exp.DataType.Type.TIMETZ, exp.DataType.Type.INTERVAL}


def _text_cast(node: exp.Expression) -> exp.Expression:
    if isinstance(node, exp.Cast) and node.to.this in _TEXT_CASTS:
        return exp.cast(node.this, exp.DataType.Type.TEXT)
    return node


def transpile(sql: str) -> str | None:
    """sqlglot's SQLite rendering of a PostgreSQL statement, or None if it has none."""
    try:
        trees = sqlglot.parse(sql, read="postgres")
        if len(trees) != 1 or trees[0] is None:
            return None
        out = trees[0].transform(_text_cast).sql(dialect="sqlite", unsupported_level=sqlglot.ErrorLevel.IGNORE)
    except sqlglot.errors.SqlglotError:
        return None
    text, _ = placeholders(prepare(out))
    return text


def command_tag(head: list[str], changes: int, rows: int) -> str:
    verb = head[0] if head else ""
    if verb == "INSERT":
        return f"INSERT 0 {changes}"
    if verb in ("UPDATE", "DELETE"):
        return f"{verb} {changes}"
    if verb == "TRUNCATE":
        return "TRUNCATE TABLE"
    if verb in ("SELECT", "VALUES", "WITH", "PRAGMA", "EXPLAIN", "SHOW"):
        return f"SELECT {rows}"
    if verb in ("CREATE", "DROP", "ALTER") and len(head) > 1:
        return f"{verb} {head[1]}"
    return verb or "OK"
