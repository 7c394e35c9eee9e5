"""Errors as PostgreSQL SQLSTATE codes."""

from __future__ import annotations

import apsw

from .pipeline import InstanceFailed

SYNTAX_ERROR = "42601"
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
UNDEFINED_FUNCTION = "42883"
DUPLICATE_TABLE = "42P07"
UNIQUE_VIOLATION = "23505"
NOT_NULL_VIOLATION = "23502"
FOREIGN_KEY_VIOLATION = "23503"
CHECK_VIOLATION = "23514"
INTEGRITY_VIOLATION = "23000"
SERIALIZATION_FAILURE = "40001"
READ_ONLY_TRANSACTION = "25006"
IN_FAILED_TRANSACTION = "25P02"
NO_ACTIVE_TRANSACTION = "25P01"
IDLE_IN_TRANSACTION_TIMEOUT = "25P03"
ADMIN_SHUTDOWN = "57P01"
CONNECTION_FAILURE = "08006"
PROTOCOL_VIOLATION = "08P01"
INVALID_PASSWORD = "28P01"
INVALID_AUTHORIZATION = "28000"  # e.g. a plain connection where TLS is required
TOO_MANY_CONNECTIONS = "53300"
PROGRAM_LIMIT_EXCEEDED = "54000"
FEATURE_NOT_SUPPORTED = "0A000"
DATATYPE_MISMATCH = "42804"
INVALID_TEXT = "22P02"
IO_ERROR = "58030"
INTERNAL_ERROR = "XX000"


class SqlError(Exception):
    def __init__(self, code: str, message: str, fatal: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.fatal = fatal

    def fields(self) -> dict[str, str]:
        severity = "FATAL" if self.fatal else "ERROR"
        return {"S": severity, "V": severity, "C": self.code, "M": self.message}


def is_parse_error(exc: BaseException) -> bool:
    """SQLite refused the text before running anything (a retry with a rewrite is safe)."""
    text = str(exc)
    return isinstance(exc, apsw.SQLError) and any(
        k in text for k in ("syntax error", "unrecognized token", "no such function", "near \"")
    )


def from_exception(exc: BaseException) -> SqlError:
    if isinstance(exc, SqlError):
        return exc
    if isinstance(exc, InstanceFailed):
        return SqlError(ADMIN_SHUTDOWN, f"terminating connection: this instance stopped ({exc})", fatal=True)
    text = str(exc)
    if isinstance(exc, apsw.ConstraintError):
        low = text.lower()
        if "unique" in low or "primary key" in low:
            code = UNIQUE_VIOLATION
        elif "not null" in low:
            code = NOT_NULL_VIOLATION
        elif "foreign key" in low:
            code = FOREIGN_KEY_VIOLATION
        elif "check" in low:
            code = CHECK_VIOLATION
        else:
            code = INTEGRITY_VIOLATION
        return SqlError(code, text)
    if isinstance(exc, apsw.ReadOnlyError):
        return SqlError(READ_ONLY_TRANSACTION, f"cannot execute this statement in a read-only transaction ({text})")
    if isinstance(exc, apsw.BusyError | apsw.LockedError):
        return SqlError(SERIALIZATION_FAILURE, f"could not serialize access: {text}")
    if isinstance(exc, apsw.TooBigError):
        return SqlError(PROGRAM_LIMIT_EXCEEDED, text)
    if isinstance(exc, apsw.MismatchError):
        return SqlError(DATATYPE_MISMATCH, text)
    if isinstance(exc, apsw.BindingsError):
        return SqlError(PROTOCOL_VIOLATION, f"bind: {text}")
    if isinstance(exc, apsw.SQLError):
        if "syntax error" in text or "unrecognized token" in text or "incomplete input" in text:
            return SqlError(SYNTAX_ERROR, text)
        if "no such table" in text:
            return SqlError(UNDEFINED_TABLE, text)
        if "no such column" in text:
            return SqlError(UNDEFINED_COLUMN, text)
        if "no such function" in text:
            return SqlError(UNDEFINED_FUNCTION, text)
        if "already exists" in text:
            return SqlError(DUPLICATE_TABLE, text)
        if "journal_mode" in text:
            return SqlError(FEATURE_NOT_SUPPORTED, text)
        return SqlError(SYNTAX_ERROR if "near" in text else FEATURE_NOT_SUPPORTED, text)
    if isinstance(exc, apsw.IOError | TimeoutError | OSError):
        return SqlError(IO_ERROR, f"storage I/O failed: {text}")
    if isinstance(exc, ValueError | UnicodeDecodeError):
        return SqlError(INVALID_TEXT, text)
    return SqlError(INTERNAL_ERROR, f"{type(exc).__name__}: {text}")
