"""One statement on the SQLite thread: PostgreSQL text as written when SQLite parses
it, else sqlglot's rendering (only a parse-time refusal is retried: nothing ran)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import apsw

from .engine import Engine, Result
from .sqlstate import is_parse_error
from .translate import placeholders, prepare, split_statements, transpile


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


def describe(engine: Engine, translator: Translator, translated: Translated) -> list[tuple[str, str | None]]:
    """SQLite thread: a statement's columns, with the same fallback as run()."""
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
