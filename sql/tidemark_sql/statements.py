"""One statement on the SQLite thread: PostgreSQL text as written when SQLite parses
it, else sqlglot's rendering (only a parse-time refusal is retried: nothing ran); the
description of a prepared statement (its columns, and the types of both, infer.py)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import apsw

from . import pgtypes
from .engine import Engine, Result
from .infer import infer
from .sqlstate import is_parse_error
from .translate import placeholders, prepare, split_statements, transpile


@dataclass(frozen=True, slots=True)
class Description:
    columns: list[tuple[str, str | None]]  # (name, declared type); empty: returns no rows
    column_oids: list[int]
    param_oids: dict[int, int]  # $n -> type, for those that could be inferred


@dataclass(frozen=True, slots=True)
class Translated:
    text: str  # what SQLite runs first
    nparams: int
    original: str


class Translator:
    def __init__(self, size: int = 512) -> None:
        self._cache: OrderedDict[str, Translated] = OrderedDict()
        self._size = size

    def __call__(self, sql: str) -> Translated:
        hit = self._cache.get(sql)
        if hit is not None:
            self._cache.move_to_end(sql)
            return hit
        text, nparams = placeholders(prepare(sql))
        out = Translated(text, nparams, sql)
        self._cache[sql] = out
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return out

    def replace(self, translated: Translated, text: str) -> None:
        """Remember the rewrite that worked, so the next run skips the failed try."""
        self._cache[translated.original] = Translated(text, translated.nparams, translated.original)


def run(engine: Engine, translator: Translator, translated: Translated, params: tuple[Any, ...]) -> Result:
    """SQLite thread."""
    try:
        return engine.execute(translated.text, params)
    except apsw.SQLError as exc:
        if not is_parse_error(exc) or _several(translated):
            raise
        alt = transpile(translated.original)
        if alt is None or alt == translated.text:
            raise
        try:
            result = engine.execute(alt, params)
        except apsw.SQLError:
            raise exc from None
        translator.replace(translated, alt)
        return result


def _several(translated: Translated) -> bool:
    """A rewrite into several statements (translate.py: DROP a, b ...): a parse error may
    come after the first ran, so retrying another rendering is not safe."""
    return translated.text != translated.original and len(split_statements(translated.text)) > 1


def describe(engine: Engine, translator: Translator, translated: Translated) -> Description:
    """SQLite thread: what a prepared statement takes and returns, before it runs. A
    column reference has its declared type; an expression the type sqlglot gives it."""
    columns = _describe_columns(engine, translator, translated)
    inferred = infer(translated.original, engine.table_columns)
    guessed = inferred.columns if inferred.columns is not None and len(inferred.columns) == len(columns) else None
    oids = [pgtypes.oid_for(decl, None) if decl else (guessed[i] if guessed and guessed[i] else pgtypes.TEXT)
            for i, (_name, decl) in enumerate(columns)]
    return Description(columns, oids, inferred.params)


def _describe_columns(engine: Engine, translator: Translator, translated: Translated) -> list[tuple[str, str | None]]:
    try:
        return engine.describe(translated.text, translated.nparams)
    except apsw.SQLError as exc:
        if not is_parse_error(exc):
            raise
        alt = transpile(translated.original)
        if alt is None or alt == translated.text:
            raise
        translator.replace(translated, alt)
        return engine.describe(alt, translated.nparams)
