"""Pure pieces: statement splitting, placeholders, rewrites, SCRAM verification."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from tidemark_sql.scram import AuthFailed, ScramExchange, Verifier, parse_credentials
from tidemark_sql.translate import keywords, placeholders, prepare, split_statements, transpile

pytestmark = pytest.mark.sql


def test_split_respects_strings_comments_and_dollar_quotes() -> None:
    sql = "select 'a;b'; -- c;\n insert into t values (1);; select $$x;y$$ ; /* ; */"
    assert split_statements(sql) == ["select 'a;b'", "-- c;\n insert into t values (1)", "select $$x;y$$"]
    assert split_statements("  ;  -- nothing\n") == []


def test_placeholders_and_rewrites() -> None:
    assert placeholders("select $1, '$2', \"$3\", $10") == ("select ?1, '$2', \"$3\", ?10", 10)
    assert prepare("CREATE TABLE t (id BIGSERIAL PRIMARY KEY, s TEXT) WITH (fillfactor=90)") == \
        "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)"
    assert prepare("SELECT * FROM pg_catalog.pg_type WHERE typname = 'pg_catalog.x'") == \
        "SELECT * FROM pg_type WHERE typname = 'pg_catalog.x'"
    assert transpile("SELECT x::int FROM t WHERE y ILIKE $1") == \
        "SELECT CAST(x AS INTEGER) FROM t WHERE LOWER(y) LIKE LOWER(?1)"
    assert keywords("/* c */ begin isolation level serializable", 2) == ["BEGIN", "ISOLATION"]


def _client_final(exchange: ScramExchange, password: str, nonce: str = "abc") -> bytes:
    bare = f"n=,r={nonce}"
    server_first = exchange.first(f"n,,{bare}".encode()).decode()
    attrs = dict(p.split("=", 1) for p in server_first.split(","))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    without = f"c=biws,r={attrs['r']}"
    sig = hmac.digest(hashlib.sha256(client_key).digest(), f"{bare},{server_first},{without}".encode(), "sha256")
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True))).decode()
    return f"{without},p={proof}".encode()


def test_scram_accepts_the_password_and_nothing_else() -> None:
    users = parse_credentials("# comment\nalice:pw1\n")
    final = ScramExchange(users["alice"])
    assert final.final(_client_final(final, "pw1")).startswith(b"v=")
    for verifier, password in ((users["alice"], "pw2"), (None, "pw1")):
        exchange = ScramExchange(verifier)
        with pytest.raises(AuthFailed):
            exchange.final(_client_final(exchange, password))
    exchange = ScramExchange(Verifier.from_password("x"))
    exchange.first(b"n,,n=,r=abc")
    with pytest.raises(AuthFailed):
        exchange.final(b"c=biws,r=other,p=AAAA")
    with pytest.raises(AuthFailed):
        ScramExchange(None).first(b"p=tls-server-end-point,,n=,r=abc")
    with pytest.raises(ValueError):
        parse_credentials("no-colon")
