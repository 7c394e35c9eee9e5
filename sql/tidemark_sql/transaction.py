"""A session's transactions with PostgreSQL semantics over the shared SQLite connection:
a block's first statement takes the connection's turn until COMMIT/ROLLBACK (as
PostgreSQL takes a block's snapshot at its first statement, not at BEGIN: the
round trip between BEGIN and it holds nobody up), an error inside a transaction
aborts it (25P02 until its end), and every answer waits until VDL has passed the
newest commit its statement may have seen (pipeline.wait)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pygwire.messages import NoticeResponse, PGMessage

from . import catalog, pgtypes, statements
from .engine import Engine, Result
from .gate import Gate
from .pipeline import Pipeline
from .sqlstate import IN_FAILED_TRANSACTION, NO_ACTIVE_TRANSACTION, SqlError
from .statements import Translated, Translator
from .translate import command_tag, keywords

_READ_ONLY = re.compile(r"\bread\s+only\b", re.IGNORECASE)
_TXN_END = ("COMMIT", "END", "ROLLBACK", "ABORT")
# Session statements answered here, never by SQLite. CLOSE ALL and UNLISTEN * are what
# a connection pool sends on release (asyncpg's reset query): no cursors, no listeners.
_SESSION = ("SET", "SHOW", "RESET", "DISCARD", "DEALLOCATE", "CLOSE", "UNLISTEN")
CONTROL = ("BEGIN", "START", *_SESSION, *_TXN_END)


@dataclass(slots=True)
class Outcome:
    tag: str
    columns: list[tuple[str, str | None]] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    returns_rows: bool = False
    oids: list[int] = field(default_factory=list)


class Transaction:
    def __init__(
        self,
        engine: Engine,
        translator: Translator,
        gate: Gate,
        pipeline: Pipeline,
        settings: dict[str, str],
        notice: Callable[[PGMessage], None],
    ) -> None:
        self.engine = engine
        self.translator = translator
        self.gate = gate
        self.pipeline = pipeline
        self.settings = settings
        self.notice = notice
        self.open = False
        self.failed = False
        self.read_only = False
        self.begun = False  # SQLite's BEGIN has run (it waits for the block's first statement)

    async def run(self, translated: Translated, params: tuple[Any, ...]) -> Outcome:
        """One statement with PostgreSQL transaction semantics."""
        self.pipeline.check()
        head = keywords(translated.original, 3)
        verb = head[0] if head else ""
        if self.failed and verb not in _TXN_END:
            raise SqlError(IN_FAILED_TRANSACTION,
                           "current transaction is aborted, commands ignored until end of transaction block")
        if not self.open and verb in ("SAVEPOINT", "RELEASE") or not self.open and head[:2] == ["ROLLBACK", "TO"]:
            raise SqlError(NO_ACTIVE_TRANSACTION, f"{verb} can only be used in transaction blocks")
        if verb in ("BEGIN", "START"):
            return await self._begin(translated.original)
        if verb in ("COMMIT", "END"):
            return await self._commit()
        if verb in ("ROLLBACK", "ABORT") and "TO" not in head:
            return await self._rollback()
        if verb in _SESSION:
            return self._setting(translated.original, head)
        return await self._statement(translated, params, head)

    async def _begin(self, sql: str) -> Outcome:
        if self.open:
            self.notice(NoticeResponse(fields={"S": "WARNING", "V": "WARNING", "C": "25001",
                                               "M": "there is already a transaction in progress"}))
            return Outcome("BEGIN")
        # The turn and SQLite's BEGIN wait for the block's first statement (_statement):
        # one trip to the SQLite thread fewer, and the turn is not held while the
        # client sends that statement.
        self.read_only = bool(_READ_ONLY.search(sql))
        self.begun = False
        self.open = True
        return Outcome("BEGIN")

    def _sqlite_begin(self) -> None:
        """SQLite thread, before the block's first statement."""
        if self.begun:
            return
        if self.read_only and not self.engine.replica:  # a replica is query_only for good
            self.engine.execute("PRAGMA query_only=1")
        self.engine.execute("BEGIN")
        self.begun = True

    def _sqlite_commit(self) -> None:
        """SQLite thread: COMMIT and the block's cleanup in one trip."""
        try:
            if self.begun:
                self.engine.execute("COMMIT")
        finally:
            self._sqlite_end()

    async def _commit(self) -> Outcome:
        if not self.open:
            return Outcome("COMMIT")
        if self.failed:
            return await self._rollback()
        if self.gate.owner is not self:  # no statement ran in the block: nothing to commit
            self._give_turn()
            return Outcome("COMMIT")
        try:
            await self.engine.run(self._sqlite_commit)
            cpl = self.pipeline.last_cpl  # read while we hold the turn
        finally:
            self._give_turn()
        await self.pipeline.wait(cpl)
        return Outcome("COMMIT")

    async def _rollback(self) -> Outcome:
        if self.open:
            await self._end_txn()
        return Outcome("ROLLBACK")

    async def _end_txn(self) -> None:
        """Close the SQLite transaction if still open (rollback) and give the turn away."""
        try:
            if self.begun:
                await self.engine.run(self._sqlite_end)
        finally:
            self._give_turn()

    def _give_turn(self) -> None:
        self.open = self.failed = self.read_only = self.begun = False
        self.gate.release(self)

    def _sqlite_end(self) -> None:
        try:
            self.engine.rollback_if_open()
        finally:
            if self.read_only and not self.engine.replica:
                self.engine.execute("PRAGMA query_only=0")

    async def _statement(self, translated: Translated, params: tuple[Any, ...], head: list[str]) -> Outcome:
        if self.open:
            if self.gate.owner is not self:
                await self.gate.acquire(self)  # the block's first statement: its turn begins
            self.engine.session_settings = self.settings  # for current_setting(): our turn
            result = await self.engine.run(self._in_block, translated, params)
            cpl = self.pipeline.last_cpl
            if head[:2] == ["ROLLBACK", "TO"]:
                self.failed = False
        else:
            await self.gate.acquire(self)
            try:
                self.engine.session_settings = self.settings
                result = await self.engine.run(self._autocommit, translated, params)
                cpl = self.pipeline.last_cpl  # read while we hold the turn
            finally:
                self.gate.release(self)
        await self.pipeline.wait(cpl)
        return _outcome(result, head)

    def _in_block(self, translated: Translated, params: tuple[Any, ...]) -> Result:
        self._sqlite_begin()
        return statements.run(self.engine, self.translator, translated, params)

    def _autocommit(self, translated: Translated, params: tuple[Any, ...]) -> Result:
        """SQLite thread: a statement outside BEGIN must not leave a transaction open
        (the next session would run inside it)."""
        try:
            return statements.run(self.engine, self.translator, translated, params)
        finally:
            if self.engine.in_transaction:
                self.engine.rollback_if_open()

    def _setting(self, sql: str, head: list[str]) -> Outcome:
        verb = head[0]
        if verb == "SHOW":
            name = catalog.parse_show(sql)
            if name is None:
                raise SqlError("42601", f"cannot parse: {sql}")
            if name.lower() == "all":
                rows = [(k, v) for k, v in sorted(self.settings.items())]
                return Outcome("SHOW", [("name", None), ("setting", None)], rows, True, [pgtypes.TEXT] * 2)
            value = self._lookup(name)
            if value is None:
                raise SqlError("42704", f'unrecognized configuration parameter "{name}"')
            return Outcome("SHOW", [(name.lower(), None)], [(value,)], True, [pgtypes.TEXT])
        if verb == "SET":
            if len(head) > 1 and (head[1] == "TRANSACTION" or head[1:3] == ["SESSION", "CHARACTERISTICS"]):
                return Outcome("SET")  # SQLite transactions are serializable already
            parsed = catalog.parse_set(sql)
            if parsed is None:
                raise SqlError("42601", f"cannot parse: {sql}")
            self.settings[parsed[0]] = parsed[1]
            return Outcome("SET")
        if verb == "RESET":
            name = catalog.parse_reset(sql)
            if name and name.lower() != "all":
                self.settings.pop(name, None)
                if name in catalog.DEFAULTS:
                    self.settings[name] = catalog.DEFAULTS[name]
            return Outcome("RESET")
        if verb == "DEALLOCATE":
            return Outcome("DEALLOCATE")
        if verb == "CLOSE":
            if head[1:2] != ["ALL"]:
                raise SqlError("34000", f"cursor does not exist: {sql}")  # no DECLARE, so no cursors
            return Outcome("CLOSE CURSOR ALL")
        if verb == "UNLISTEN":
            return Outcome("UNLISTEN")
        return Outcome("DISCARD ALL")

    def _lookup(self, name: str) -> str | None:
        for key, value in self.settings.items():
            if key.lower() == name.lower():
                return value
        return None

    async def close(self) -> None:
        """The client went away: roll back its open transaction, give the turn away."""
        if self.open:
            await self._end_txn()


def _outcome(result: Result, head: list[str]) -> Outcome:
    tag = command_tag(head, result.changes, len(result.rows))
    if head[:1] in (["INSERT"], ["UPDATE"], ["DELETE"]) and result.returns_rows:
        tag = command_tag(head, len(result.rows), len(result.rows))
    return Outcome(tag, result.columns, result.rows, result.returns_rows,
                   pgtypes.column_oids(result.columns, result.rows))
