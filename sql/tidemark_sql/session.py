"""One client's conversation after startup: simple and extended query protocol,
transaction state (ReadyForQuery status), PostgreSQL errors.

As in PostgreSQL, the statements of one extended-protocol batch (up to Sync) outside a
transaction block are one implicit transaction, committed at Sync and rolled back if
one fails (asyncpg's executemany is atomic by it). A batch that can be seen to hold one
statement (a Sync received right behind it: psycopg, pgbench, asyncpg's fetch) runs in
autocommit instead, which is the same outcome without BEGIN and COMMIT.

Every answer waits until VDL has passed the newest commit this statement may have
seen (pipeline.wait), so a client never sees data that could still be lost.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from pygwire.constants import TransactionStatus
from pygwire.messages import (
    Bind,
    BindComplete,
    Close,
    CloseComplete,
    CommandComplete,
    DataRow,
    Describe,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    FieldDescription,
    Flush,
    NoData,
    ParameterDescription,
    Parse,
    ParseComplete,
    PGMessage,
    PortalSuspended,
    Query,
    ReadyForQuery,
    RowDescription,
    Sync,
    Terminate,
)

from . import pgtypes, statements
from .engine import Engine
from .gate import Gate
from .pipeline import Pipeline
from .sqlstate import (
    PROTOCOL_VIOLATION,
    SqlError,
    from_exception,
)
from .statements import Translated, Translator
from .transaction import CONTROL, Outcome, Transaction
from .translate import keywords, split_statements

# Statements that end an implicit multi-statement transaction or cannot run inside one
# (SQLite refuses VACUUM in a transaction): a Query holding one runs statement by statement.
IMPLICIT_BREAKERS = frozenset({"BEGIN", "START", "COMMIT", "END", "ROLLBACK", "ABORT", "SAVEPOINT", "RELEASE",
                               "VACUUM"})

log = structlog.get_logger("tidemark.sql.session")

@dataclass(slots=True)
class Prepared:
    translated: Translated
    head: list[str]
    param_types: list[int]
    described: list[int] | None = None  # column OIDs sent by Describe(statement)


@dataclass(slots=True)
class Portal:
    prepared: Prepared
    params: tuple[Any, ...]
    result_formats: list[int]
    outcome: Outcome | None = None
    sent: int = 0


class Session:
    def __init__(
        self,
        engine: Engine,
        translator: Translator,
        gate: Gate,
        pipeline: Pipeline,
        send: Callable[[PGMessage], None],
        settings: dict[str, str],
        batch_continues: Callable[[], bool] = lambda: True,
    ) -> None:
        self.engine = engine
        self.translator = translator
        self.gate = gate
        self.pipeline = pipeline
        self.send = send
        self.settings = settings
        self.txn = Transaction(engine, translator, gate, pipeline, settings, send)
        self.skip_to_sync = False
        self.batch_continues = batch_continues  # more statements may come before Sync
        self.implicit = False  # the open transaction is an extended batch's implicit one
        self.statements: dict[str, Prepared] = {}
        self.portals: dict[str, Portal] = {}

    @property
    def status(self) -> TransactionStatus:
        if self.txn.failed:
            return TransactionStatus.ERROR_TRANSACTION
        return TransactionStatus.IN_TRANSACTION if self.txn.open else TransactionStatus.IDLE

    def abort_transaction(self) -> None:
        """An error outside a statement (a refused message) aborts an open transaction."""
        if self.txn.open:
            self.txn.failed = True

    async def close(self) -> None:
        await self.txn.close()

    # -- dispatch ---------------------------------------------------------------------
    async def handle(self, msg: PGMessage) -> bool:
        """Answer one message; False when the connection should close."""
        if isinstance(msg, Terminate):
            return False
        if isinstance(msg, Query):
            if not await self._end_implicit():
                return False
            await self.simple_query(msg.query_string)
            return True
        if isinstance(msg, Sync):
            self.skip_to_sync = False
            keep = await self._end_implicit()
            self.send(ReadyForQuery(status=self.status))
            return keep
        if isinstance(msg, Flush):
            return True
        if self.skip_to_sync:
            return True  # after an error, the rest of the batch is discarded
        try:
            if isinstance(msg, Parse):
                self.parse(msg)
            elif isinstance(msg, Bind):
                self.bind(msg)
            elif isinstance(msg, Describe):
                await self.describe(msg)
            elif isinstance(msg, Execute):
                await self.execute(msg)
            elif isinstance(msg, Close):
                (self.statements if msg.kind == "S" else self.portals).pop(msg.name, None)
                self.send(CloseComplete())
            else:
                raise SqlError(PROTOCOL_VIOLATION, f"unexpected message {type(msg).__name__}")
        except Exception as exc:  # every error goes to the client, never up
            self.error(exc)
            self.skip_to_sync = True
            if from_exception(exc).fatal:
                return False
        return True

    def error(self, exc: BaseException) -> None:
        err = from_exception(exc)
        if err.code.startswith("XX") or err.code.startswith("58"):
            log.warning("statement_failed", code=err.code, error=err.message)
        self.abort_transaction()
        self.send(ErrorResponse(fields=err.fields()))

    # -- simple query -----------------------------------------------------------------
    async def simple_query(self, text: str) -> None:
        parts = split_statements(text)
        if not parts:
            self.send(EmptyQueryResponse())
        # As in PostgreSQL, several statements outside a transaction block and without
        # transaction control of their own run as one implicit transaction: a failing
        # one undoes those before it (else `INSERT …; SELEC` stored the INSERT).
        implicit = len(parts) > 1 and not self.txn.open and not any(
            keywords(p, 1)[:1] and keywords(p, 1)[0] in IMPLICIT_BREAKERS for p in parts)
        try:
            if implicit:
                await self.txn.run(self.translator("BEGIN"), ())
            for sql in parts:
                outcome = await self.txn.run(self.translator(sql), ())
                self._send_outcome(outcome, [], describe=True)
            if implicit:
                await self.txn.run(self.translator("COMMIT"), ())
        except Exception as exc:
            self.error(exc)
            if implicit and self.txn.open:
                await self.txn.close()  # roll it back and give the turn away (even when fenced)
            if from_exception(exc).fatal:
                raise ConnectionAbortedError from exc
        self.send(ReadyForQuery(status=self.status))

    # -- extended query ---------------------------------------------------------------
    async def _run(self, portal: Portal) -> Outcome:
        """Run a bound statement; outside a transaction block, in the batch's implicit
        transaction unless it is the batch's only statement."""
        head = portal.prepared.head
        verb = head[0] if head else ""
        if self.implicit and verb in ("BEGIN", "START"):
            self.implicit = False  # as in PostgreSQL: the implicit block becomes a real one
            return Outcome("BEGIN")
        if (not self.txn.open and verb not in IMPLICIT_BREAKERS and verb not in CONTROL
                and self.batch_continues()):
            await self.txn.run(self.translator("BEGIN"), ())
            self.implicit = True
        outcome = await self.txn.run(portal.prepared.translated, portal.params)
        if self.implicit and not self.txn.open:
            self.implicit = False  # the batch ended it (COMMIT, ROLLBACK)
        return outcome

    async def _end_implicit(self) -> bool:
        """Sync (or a Query) ends the batch: its implicit transaction commits, or rolls
        back after an error. False if the connection must close (fatal)."""
        if not self.implicit:
            return True
        self.implicit = False
        if not self.txn.open:
            return True
        try:
            await self.txn.run(self.translator("COMMIT"), ())  # a failed transaction rolls back
        except Exception as exc:
            self.error(exc)
            if self.txn.open:
                await self.txn.close()
            return not from_exception(exc).fatal
        return True

    def parse(self, msg: Parse) -> None:
        translated = self.translator(msg.query)
        self.statements[msg.statement] = Prepared(translated, keywords(msg.query, 3), list(msg.param_types))
        self.send(ParseComplete())

    def bind(self, msg: Bind) -> None:
        prepared = self.statements.get(msg.statement)
        if prepared is None:
            raise SqlError("26000", f'prepared statement "{msg.statement}" does not exist')
        formats = msg.param_formats
        params = []
        for i, raw in enumerate(msg.param_values):
            fmt = formats[i] if len(formats) > 1 else (formats[0] if formats else 0)
            oid = prepared.param_types[i] if i < len(prepared.param_types) else 0
            params.append(pgtypes.decode_param(raw, oid, fmt == 1))
        self.portals[msg.portal] = Portal(prepared, tuple(params), list(msg.result_formats))
        self.send(BindComplete())

    async def describe(self, msg: Describe) -> None:
        if msg.kind == "S":
            prepared = self.statements.get(msg.name)
            if prepared is None:
                raise SqlError("26000", f'prepared statement "{msg.name}" does not exist')
            description = await self._describe_statement(prepared)
            n = max(prepared.translated.nparams, len(prepared.param_types))
            given = prepared.param_types
            inferred = description.param_oids if description is not None else {}
            # A parameter the client left unspecified (0) takes the inferred type, else
            # text; Bind decodes binary values by these.
            prepared.param_types = [(given[i] if i < len(given) else 0) or inferred.get(i + 1, pgtypes.TEXT)
                                    for i in range(n)]
            self.send(ParameterDescription(type_oids=prepared.param_types))
            if description is None or not description.columns:
                self.send(NoData())
                return
            prepared.described = description.column_oids
            self._send_row_description(description.columns, prepared.described, [])
            return
        portal = self._portal(msg.name)
        if portal.outcome is None:  # run now: the real values give the column types
            portal.outcome = await self._run(portal)
        if portal.outcome.returns_rows:
            self._send_row_description(portal.outcome.columns, portal.outcome.oids, portal.result_formats)
        else:
            self.send(NoData())

    async def _describe_statement(self, prepared: Prepared) -> statements.Description | None:
        head = prepared.head
        if head[:1] == ["SHOW"]:
            name = head[1].lower() if len(head) > 1 else "setting"
            return statements.Description([(name, None)], [pgtypes.TEXT], {})
        if not head or head[0] in CONTROL:
            return None
        return await self.engine.run(statements.describe, self.engine, self.translator, prepared.translated)

    async def execute(self, msg: Execute) -> None:
        portal = self._portal(msg.portal)
        if portal.outcome is None:
            portal.outcome = await self._run(portal)
            if portal.prepared.described is not None and portal.outcome.returns_rows:
                portal.outcome.oids = portal.prepared.described
        outcome = portal.outcome
        if not outcome.returns_rows:
            self.send(CommandComplete(tag=outcome.tag))
            return
        end = len(outcome.rows) if msg.max_rows <= 0 else min(len(outcome.rows), portal.sent + msg.max_rows)
        self._send_rows(outcome.rows[portal.sent:end], outcome.oids, portal.result_formats)
        portal.sent = end
        if end < len(outcome.rows):
            self.send(PortalSuspended())
        else:
            self.send(CommandComplete(tag=outcome.tag))

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise SqlError("34000", f'portal "{name}" does not exist')
        return portal

    # -- results ----------------------------------------------------------------------
    def _send_outcome(self, outcome: Outcome, formats: list[int], describe: bool) -> None:
        if outcome.returns_rows:
            if describe:
                self._send_row_description(outcome.columns, outcome.oids, formats)
            self._send_rows(outcome.rows, outcome.oids, formats)
        self.send(CommandComplete(tag=outcome.tag))

    def _send_row_description(self, columns: list[tuple[str, str | None]], oids: list[int], formats: list[int]) -> None:
        fields = [
            FieldDescription(name=name, type_oid=oid, type_size=pgtypes.TYPE_SIZES.get(oid, -1),
                             type_modifier=-1, format_code=_format(formats, i))
            for i, ((name, _decl), oid) in enumerate(zip(columns, oids, strict=True))
        ]
        self.send(RowDescription(fields=fields))

    def _send_rows(self, rows: list[tuple[Any, ...]], oids: list[int], formats: list[int]) -> None:
        binary = [_format(formats, i) == 1 for i in range(len(oids))]
        for row in rows:
            self.send(DataRow(columns=[
                (pgtypes.encode_binary if binary[i] else pgtypes.encode_text)(value, oids[i])
                for i, value in enumerate(row)
            ]))

def _format(formats: list[int], i: int) -> int:
    if not formats:
        return 0
    return formats[0] if len(formats) == 1 else (formats[i] if i < len(formats) else 0)
