"""Types of a statement's parameters and result columns, as PostgreSQL would describe
them before it runs (Describe of a prepared statement: what asyncpg asks, then encodes
and decodes binary values by). SQLite types values, not statements, so the types come
from sqlglot's type annotation over the tables' declared column types:

- a parameter takes the type of what it meets: `$1::int`, `col = $1` (any comparison or
  arithmetic, IN, BETWEEN, LIKE), `INSERT INTO t (col) VALUES ($1)`, `UPDATE t SET col
  = $1`, `LIMIT $1`; anything else is text, as an unknown-typed parameter is in
  PostgreSQL;
- a result column that is an expression (`count(*)`, `1`, `a = b`) takes sqlglot's type
  for it; a column reference keeps its declared type (the caller's).

Anything sqlglot cannot parse or annotate describes nothing (the caller falls back to
text), never an error: the statement itself may still run as SQLite parses it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sqlglot
import structlog
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

from . import pgtypes

log = structlog.get_logger("tidemark.sql.infer")

DType = exp.DataType.Type
# A table's columns: (name, declared type), in order; empty if there is no such table.
TableColumns = Callable[[str], list[tuple[str, str | None]]]

# The sqlglot type SQLite's declared types are given to the annotator as.
_SQLGLOT_TYPE = {
    pgtypes.BOOL: "BOOLEAN", pgtypes.INT8: "BIGINT", pgtypes.FLOAT8: "DOUBLE", pgtypes.TEXT: "TEXT",
    pgtypes.BYTEA: "VARBINARY", pgtypes.NUMERIC: "DECIMAL", pgtypes.DATE: "DATE",
    pgtypes.TIMESTAMP: "TIMESTAMP", pgtypes.TIMESTAMPTZ: "TIMESTAMPTZ",
}
_TEXT_TYPES = {DType.TEXT, DType.VARCHAR, DType.CHAR, DType.NCHAR, DType.NVARCHAR, DType.NAME}
_BINARY_TYPES = {DType.VARBINARY, DType.BINARY, DType.BLOB}
_DECIMAL_TYPES = exp.DataType.REAL_TYPES - {DType.FLOAT, DType.DOUBLE, DType.UDOUBLE}
_OF_CONTEXT = (exp.Binary, exp.In, exp.Between)


@dataclass(slots=True)
class Inferred:
    params: dict[int, int] = field(default_factory=dict)  # $n -> type OID (only those known)
    columns: list[int | None] | None = None  # result columns in order, None where unknown


def oid_of(datatype: exp.DataType | None) -> int | None:
    """The OID for a sqlglot type (integers are int8: SQLite's are 64-bit), or None."""
    if datatype is None:
        return None
    kind = datatype.this
    if kind == DType.BOOLEAN:
        return pgtypes.BOOL
    if kind in exp.DataType.INTEGER_TYPES:
        return pgtypes.INT8
    if kind in (DType.FLOAT, DType.DOUBLE, DType.UDOUBLE):
        return pgtypes.FLOAT8
    if kind in _DECIMAL_TYPES:
        return pgtypes.NUMERIC
    if kind in _TEXT_TYPES:
        return pgtypes.TEXT
    if kind in _BINARY_TYPES:
        return pgtypes.BYTEA
    if kind == DType.DATE:
        return pgtypes.DATE
    if kind in (DType.TIMESTAMPTZ, DType.TIMESTAMPLTZ):
        return pgtypes.TIMESTAMPTZ
    if kind in (DType.TIMESTAMP, DType.DATETIME, DType.TIMESTAMPNTZ):
        return pgtypes.TIMESTAMP
    return None


def infer(sql: str, table_columns: TableColumns) -> Inferred:
    """What can be known of `sql`'s parameter and column types (PostgreSQL text)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
        schema = _schema(tree, table_columns)
        tree = _annotate(tree, schema)
        return Inferred(_params(tree, schema), _columns(tree, schema))
    except Exception as exc:  # noqa: BLE001 - sqlglot raises many kinds; nothing is described then
        log.debug("infer_failed", error=repr(exc))
        return Inferred()


def _annotate(tree: exp.Expression, schema: dict[str, dict[str, str]]) -> exp.Expression:
    if schema:
        tree = qualify(tree, schema=schema, dialect="postgres", validate_qualify_columns=False,
                       identify=False, quote_identifiers=False)
    return annotate_types(tree, schema=schema, dialect="postgres")


def _schema(tree: exp.Expression, table_columns: TableColumns) -> dict[str, dict[str, str]]:
    """Declared types of the tables the statement names (SQLite's names are case-blind:
    keys are lower case, and so are the lookups below)."""
    schema: dict[str, dict[str, str]] = {}
    for table in tree.find_all(exp.Table):
        name = table.name.lower()
        if not name or name in schema:
            continue
        columns = table_columns(name)
        if columns:
            schema[name] = {col.lower(): _SQLGLOT_TYPE.get(pgtypes.oid_for(decl, None), "UNKNOWN") if decl else "UNKNOWN"
                            for col, decl in columns}
    return schema


def _params(tree: exp.Expression, schema: dict[str, dict[str, str]]) -> dict[int, int]:
    found: dict[int, int] = {}
    for param in tree.find_all(exp.Parameter):
        try:
            number = int(param.name)
        except ValueError:
            continue
        oid = _param_oid(param, tree, schema)
        if oid is not None:
            found.setdefault(number, oid)
    return found


def _param_oid(param: exp.Expression, tree: exp.Expression, schema: dict[str, dict[str, str]]) -> int | None:
    node, parent = param, param.parent
    while isinstance(parent, exp.Paren):
        node, parent = parent, parent.parent
    if isinstance(parent, exp.Cast):
        return oid_of(parent.to)
    if isinstance(parent, exp.Limit | exp.Offset):
        return pgtypes.INT8
    if isinstance(parent, exp.DPipe):
        return pgtypes.TEXT
    if isinstance(parent, exp.EQ) and isinstance(parent.parent, exp.Update) and isinstance(parent.this, exp.Column):
        return _declared(schema, parent.parent.this, parent.this.name)  # UPDATE t SET col = $1
    if isinstance(parent, _OF_CONTEXT):
        others = [parent.this] if not isinstance(parent, exp.Binary) else [parent.left, parent.right]
        for other in others:
            if other is not node:
                oid = oid_of(other.type) or _column_oid(schema, other)
                if oid is not None:
                    return oid
        return None
    if isinstance(parent, exp.Tuple) and isinstance(parent.parent, exp.Values):
        insert = parent.parent.parent
        if isinstance(insert, exp.Insert):
            return _inserted(insert, schema, parent.expressions.index(node))
    return None


def _inserted(insert: exp.Insert, schema: dict[str, dict[str, str]], position: int) -> int | None:
    """The declared type of the column the `position`th value of an INSERT goes to."""
    target = insert.this
    table = target.this if isinstance(target, exp.Schema) else target
    if not isinstance(table, exp.Table):
        return None
    if isinstance(target, exp.Schema) and target.expressions:
        names = [c.name for c in target.expressions]
    else:
        names = list(schema.get(table.name.lower(), {}))
    return _declared(schema, table, names[position]) if position < len(names) else None


def _declared(schema: dict[str, dict[str, str]], table: exp.Expression, column: str) -> int | None:
    if not isinstance(table, exp.Table):
        return None
    kind = schema.get(table.name.lower(), {}).get(column.lower())
    return None if kind is None or kind == "UNKNOWN" else oid_of(exp.DataType.build(kind))


def _column_oid(schema: dict[str, dict[str, str]], node: exp.Expression) -> int | None:
    """A column the annotator left untyped (it does not resolve UPDATE's and DELETE's):
    its table's declared type, or the one type all tables with that column name agree on."""
    if not isinstance(node, exp.Column):
        return None
    table, name = node.table.lower(), node.name.lower()
    tables = [schema[table]] if table in schema else list(schema.values())
    kinds = {cols[name] for cols in tables if name in cols}
    if len(kinds) != 1 or "UNKNOWN" in kinds:
        return None
    return oid_of(exp.DataType.build(kinds.pop()))


def _columns(tree: exp.Expression, schema: dict[str, dict[str, str]]) -> list[int | None] | None:
    if isinstance(tree, exp.Insert | exp.Update | exp.Delete):
        returning = tree.args.get("returning")
        target = tree.this.this if isinstance(tree.this, exp.Schema) else tree.this
        if returning is None or not isinstance(target, exp.Table):
            return None
        # RETURNING is not annotated: the same expressions as a SELECT over the table.
        select = exp.select(*(e.copy() for e in returning.expressions)).from_(target.copy())
        selects = _annotate(select, schema).selects
    else:
        selects = getattr(tree, "selects", None) if isinstance(tree, exp.Query) else None
    if not selects:
        return None
    return [_result_oid(e, schema) for e in selects]


def _result_oid(column: exp.Expression, schema: dict[str, dict[str, str]]) -> int | None:
    if isinstance(column.unalias(), exp.CurrentTimestamp):
        return pgtypes.TIMESTAMPTZ  # now(): sqlglot says timestamp, PostgreSQL timestamptz
    return oid_of(column.type) or _column_oid(schema, column)
