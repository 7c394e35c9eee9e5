"""The PostgreSQL wire endpoint: asyncio sockets, framing with size limits, startup,
SCRAM-SHA-256 authentication; pygwire decodes and encodes the messages.

We frame messages ourselves (header first) so an oversized message is refused before
it is buffered, then hand each whole message to pygwire's decoder. Anything malformed
ends that connection with an error; the server and other sessions go on.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl
import struct
from collections.abc import Callable

import structlog
from pygwire.codec import FrontendMessageDecoder
from pygwire.constants import ConnectionPhase, TransactionStatus
from pygwire.messages import (
    AuthenticationOk,
    AuthenticationSASL,
    AuthenticationSASLContinue,
    AuthenticationSASLFinal,
    BackendKeyData,
    CancelRequest,
    ErrorResponse,
    GSSEncRequest,
    ParameterStatus,
    PGMessage,
    Query,
    ReadyForQuery,
    SASLInitialResponse,
    SASLResponse,
    SSLRequest,
    StartupMessage,
)

from . import catalog
from .engine import Engine
from .gate import Gate
from .pipeline import InstanceFailed, Pipeline
from .scram import AuthFailed, ScramExchange, Verifier
from .session import Session
from .sqlstate import (
    ADMIN_SHUTDOWN,
    IDLE_IN_TRANSACTION_TIMEOUT,
    INVALID_AUTHORIZATION,
    INVALID_PASSWORD,
    PROGRAM_LIMIT_EXCEEDED,
    PROTOCOL_VIOLATION,
    TOO_MANY_CONNECTIONS,
    SqlError,
)
from .statements import Translator

log = structlog.get_logger("tidemark.sql.server")

_LEN = struct.Struct("!I")
MAX_STARTUP = 10_000
STARTUP_TIMEOUT = 10.0
_pids = itertools.count(1000)


class Closed(Exception):
    """The client went away or must be dropped."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, max_message: int) -> None:
        self.reader = reader
        self.writer = writer
        self.max_message = max_message
        self.encrypted = False
        self._out: list[bytes] = []
        self._in = bytearray()  # received, not yet read: what batch_continues() looks at

    def send(self, msg: PGMessage) -> None:
        self._out.append(msg.to_wire())  # one write per answer, not one per message

    async def flush(self) -> None:
        if self._out:
            self.writer.write(b"".join(self._out))
            self._out.clear()
        await self.writer.drain()

    def send_error(self, err: SqlError) -> None:
        self.send(ErrorResponse(fields=err.fields()))

    async def read_exactly(self, n: int) -> bytes:
        while len(self._in) < n:
            try:
                chunk = await self.reader.read(1 << 16)
            except ConnectionError as exc:
                raise Closed from exc
            if not chunk:
                raise Closed
            self._in += chunk
        out = bytes(self._in[:n])
        del self._in[:n]
        return out

    def pending(self) -> bool:
        """Received bytes not read yet (in our buffer or the stream's)."""
        return bool(self._in) or bool(getattr(self.reader, "_buffer", b""))

    def batch_continues(self) -> bool:
        """Whether more statements may run before the next Sync: False only if the bytes
        received already show a Sync coming with no Bind before it (one statement per
        Sync, what psycopg, pgbench and asyncpg's fetch send). Not received yet: True."""
        buf, i = self._in, 0
        while i + 5 <= len(buf):
            kind = buf[i:i + 1]
            if kind == b"S":
                return False
            if kind in (b"B", b"Q"):
                return True
            (length,) = _LEN.unpack_from(buf, i + 1)
            i += 1 + max(length, 4)
        return True

    @staticmethod
    def _decode(raw: bytes, phase: ConnectionPhase) -> PGMessage:
        """One whole message (a fresh decoder each time: a failed parse may leave views
        into the old buffer behind)."""
        decoder = FrontendMessageDecoder()
        decoder.phase = phase
        decoder.feed(raw)
        error = None
        try:
            return next(decoder)
        except StopIteration:
            error = "incomplete message"
        except Exception as exc:  # pygwire's errors, and struct/unicode errors it lets through
            error = f"invalid message: {exc}"
        raise SqlError(PROTOCOL_VIOLATION, error, fatal=True)

    async def read_startup(self) -> PGMessage:
        head = await self.read_exactly(4)
        (length,) = _LEN.unpack(head)
        if not 8 <= length <= MAX_STARTUP:
            raise SqlError(PROTOCOL_VIOLATION, f"invalid startup packet length {length}", fatal=True)
        return self._decode(head + await self.read_exactly(length - 4), ConnectionPhase.STARTUP)

    async def read_message(self, phase: ConnectionPhase = ConnectionPhase.READY) -> PGMessage | SqlError:
        """The next message, or the error answering one too large to read (54000)."""
        head = await self.read_exactly(5)
        (length,) = _LEN.unpack_from(head, 1)
        if length < 4:
            raise SqlError(PROTOCOL_VIOLATION, f"invalid message length {length}", fatal=True)
        if length - 4 > self.max_message:
            await self._discard(length - 4)
            err = SqlError(PROGRAM_LIMIT_EXCEEDED,
                           f"message of {length - 4} bytes exceeds the limit of {self.max_message} bytes",
                           fatal=head[:1] not in (b"Q", b"P", b"B"))
            err.identifier = head[:1]  # type: ignore[attr-defined]
            return err
        payload = await self.read_exactly(length - 4)
        return self._decode(head + payload, phase)

    async def _discard(self, n: int) -> None:
        while n > 0:
            chunk = await self.read_exactly(min(n, 1 << 16))
            n -= len(chunk)


class Server:
    def __init__(
        self,
        engine: Engine,
        pipeline: Pipeline,
        credentials: dict[str, Verifier],
        insecure_no_auth: bool = False,
        max_connections: int = 64,
        max_message: int = 1 << 20,
        lock_timeout: float = 30.0,
        idle_in_transaction_timeout: float = 60.0,
        tls: ssl.SSLContext | None = None,
        require_tls: bool = False,
    ) -> None:
        if not credentials and not insecure_no_auth:
            raise ValueError("no credentials: give a password file or $TIDEMARK_SQL_PASSWORD "
                             "(or --insecure-no-auth for a playground)")
        self.engine = engine
        self.pipeline = pipeline
        self.credentials = credentials
        self.insecure = insecure_no_auth
        if require_tls and tls is None:
            raise ValueError("require_tls needs a certificate (--tls-cert/--tls-key)")
        self.tls = tls  # answers SSLRequest with S and upgrades (sslmode=require/verify-full)
        self.require_tls = require_tls
        self.max_connections = max_connections
        self.max_message = max_message
        self.gate = Gate(lock_timeout)
        # A session idle inside BEGIN holds the database for everyone (one turn at a time).
        self.idle_in_transaction_timeout = idle_in_transaction_timeout
        self.translator = Translator()
        self.sessions: set[Session] = set()
        self.connections = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        if self.insecure:
            log.warning("INSECURE_NO_AUTH", message="the SQL endpoint accepts ANY client without a password")
        self._server = await asyncio.start_server(self._client, host, port, limit=1 << 16)
        addr = self._server.sockets[0].getsockname()
        log.info("sql_listening", host=addr[0], port=addr[1])
        return addr[0], addr[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            try:
                await task
            except BaseException:  # noqa: BLE001 - shutting down
                pass
        if self._server is not None:
            await self._server.wait_closed()

    def current_setting(self, name: str) -> str | None:
        """SQLite thread: a setting of the session whose statement is running."""
        settings = self.engine.session_settings
        return next((v for k, v in settings.items() if k.lower() == name.lower()), None)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = Connection(reader, writer, self.max_message)
        session: Session | None = None
        counted = False
        try:
            try:  # a client that never finishes startup must not hold a slot
                params = await asyncio.wait_for(self._startup(conn), STARTUP_TIMEOUT)
            except TimeoutError:
                return
            if params is None:
                return
            self.connections += 1
            counted = True
            if self.connections > self.max_connections:
                raise SqlError(TOO_MANY_CONNECTIONS, "sorry, too many clients already", fatal=True)
            try:
                self.pipeline.check()
            except InstanceFailed as exc:
                raise SqlError(ADMIN_SHUTDOWN, f"this instance no longer serves: {exc}", fatal=True) from None
            user = params.get("user", "")
            try:
                await asyncio.wait_for(self._authenticate(conn, user), STARTUP_TIMEOUT)
            except TimeoutError:
                raise SqlError(INVALID_PASSWORD, "authentication timed out", fatal=True) from None
            settings = dict(catalog.DEFAULTS)
            settings.update({k: v for k, v in params.items() if k not in ("user", "database", "options")})
            settings["session_user"] = user
            session = Session(self.engine, self.translator, self.gate, self.pipeline, conn.send, settings,
                              conn.batch_continues)
            self.sessions.add(session)
            self._greet(conn, settings)
            await conn.flush()
            await self._serve(conn, session)
        except SqlError as err:
            conn.send_error(err)
        except (Closed, ConnectionError, ConnectionAbortedError):
            pass
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # a bug must cost one connection, never the server
            log.exception("session_crashed", error=repr(exc))
        finally:
            if session is not None:
                self.sessions.discard(session)
                try:
                    await session.close()
                except Exception as exc:  # noqa: BLE001 - the instance may be failed already
                    log.warning("session_close_failed", error=repr(exc))
            if counted:
                self.connections -= 1
            self._tasks.discard(task)
            try:
                await conn.flush()
                writer.close()
            except (OSError, RuntimeError):  # ssl.SSLError of a failed handshake included
                pass

    async def _startup(self, conn: Connection) -> dict[str, str] | None:
        while True:
            msg = await conn.read_startup()
            if isinstance(msg, SSLRequest) and self.tls is not None and not conn.encrypted:
                await self._start_tls(conn)
                continue
            if isinstance(msg, SSLRequest | GSSEncRequest):
                conn.writer.write(b"N")  # no (more) encryption: the client goes on or gives up
                continue
            if isinstance(msg, CancelRequest):
                return None  # cancellation is not supported; PostgreSQL just closes too
            if isinstance(msg, StartupMessage):
                if self.require_tls and not conn.encrypted:
                    raise SqlError(INVALID_AUTHORIZATION, "this server accepts TLS connections only "
                                   "(connect with sslmode=require or verify-full)", fatal=True)
                if msg.protocol_version >> 16 != 3:
                    raise SqlError(PROTOCOL_VIOLATION, "unsupported frontend protocol", fatal=True)
                return dict(msg.params)
            raise SqlError(PROTOCOL_VIOLATION, "expected a startup message", fatal=True)

    async def _start_tls(self, conn: Connection) -> None:
        if conn.pending():  # bytes sent after SSLRequest before the handshake: injected plaintext
            raise SqlError(PROTOCOL_VIOLATION, "received unencrypted data after SSL request", fatal=True)
        conn.writer.write(b"S")
        await conn.writer.drain()
        assert self.tls is not None
        try:
            await conn.writer.start_tls(self.tls, ssl_handshake_timeout=STARTUP_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.warning("tls_handshake_failed", error=str(exc))
            raise Closed from exc
        conn.encrypted = True

    async def _authenticate(self, conn: Connection, user: str) -> None:
        if self.insecure:
            conn.send(AuthenticationOk())
            return
        failed = SqlError(INVALID_PASSWORD, f'password authentication failed for user "{user}"', fatal=True)
        exchange = ScramExchange(self.credentials.get(user))
        conn.send(AuthenticationSASL(mechanisms=["SCRAM-SHA-256"]))
        await conn.flush()
        try:
            first = await conn.read_message(ConnectionPhase.AUTHENTICATING_SASL_INITIAL)
            if not isinstance(first, SASLInitialResponse) or first.mechanism != "SCRAM-SHA-256":
                raise failed
            conn.send(AuthenticationSASLContinue(data=exchange.first(first.data)))
            await conn.flush()
            final = await conn.read_message(ConnectionPhase.AUTHENTICATING_SASL_CONTINUE)
            if not isinstance(final, SASLResponse):
                raise failed
            conn.send(AuthenticationSASLFinal(data=exchange.final(final.data)))
        except (AuthFailed, UnicodeDecodeError, ValueError) as exc:
            log.warning("auth_failed", user=user, reason=str(exc))
            raise failed from None
        conn.send(AuthenticationOk())

    def _greet(self, conn: Connection, settings: dict[str, str]) -> None:
        for name in catalog.REPORTED:
            if name in settings:
                conn.send(ParameterStatus(name=name, value=settings[name]))
        conn.send(BackendKeyData(process_id=next(_pids), secret_key=secrets.token_bytes(4)))
        conn.send(ReadyForQuery(status=TransactionStatus.IDLE))

    async def _serve(self, conn: Connection, session: Session) -> None:
        handle: Callable[[PGMessage], object] = session.handle
        while True:
            if session.txn.open:
                try:
                    msg = await asyncio.wait_for(conn.read_message(), self.idle_in_transaction_timeout)
                except TimeoutError:
                    raise SqlError(IDLE_IN_TRANSACTION_TIMEOUT, "terminating connection due to "
                                   "idle-in-transaction timeout", fatal=True) from None
            else:
                msg = await conn.read_message()
            if isinstance(msg, SqlError):  # too large: refused, the session goes on
                conn.send_error(msg)
                if msg.fatal:
                    return
                session.abort_transaction()
                if getattr(msg, "identifier", b"") == b"Q":
                    conn.send(ReadyForQuery(status=session.status))
                else:  # an extended-protocol message: the rest of its batch is skipped
                    session.skip_to_sync = True
                await conn.flush()
                continue
            if isinstance(msg, Query):
                session.skip_to_sync = False
            try:
                keep = await handle(msg)
            except ConnectionAbortedError:
                return
            await conn.flush()
            if not keep:
                return
