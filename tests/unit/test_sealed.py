"""The sealed-object format (tidemark_backup.sealed): round trip, key ids and rotation,
and every way an object can fail to open (wrong key, truncation, tampering, another name)."""

from __future__ import annotations

import os

import pytest

from tidemark_backup import chunks
from tidemark_backup.objstore import open_store
from tidemark_backup.sealed import (
    MAGIC,
    Key,
    KeyFileError,
    Keyring,
    MissingKey,
    NotAuthentic,
    SealError,
    is_sealed,
    load_key_file,
    new_key_file,
    parse_key,
)
from tidemark_protocol.errors import UserError

pytestmark = [pytest.mark.unit, pytest.mark.security]

NAME = "pg-00001/log/00000000000000000000-00000000000000000100-e000001-a1-g000001.chunk"


def _ring(*keys: Key) -> Keyring:
    return Keyring(list(keys))


def _key() -> Key:
    return Key.of(os.urandom(32))


def test_round_trip_and_header() -> None:
    key = _key()
    body = chunks.encode_marks({"node": "a1", "gen": 1}, [(5, 10), (7, 20)])
    sealed = _ring(key).seal(NAME, body)
    assert is_sealed(sealed) and sealed[:4] == MAGIC and sealed[4] == 1
    assert key.id.encode() in sealed[:40]
    assert body not in sealed  # encrypted, not just wrapped
    assert _ring(key).open(NAME, sealed) == body
    assert _ring(key).seal(NAME, body) != sealed  # a fresh nonce per object
    assert len(sealed) - len(body) == 4 + 1 + 1 + len(key.id) + 12 + 16


def test_key_id_is_stable_and_reveals_nothing() -> None:
    secret = os.urandom(32)
    assert Key.of(secret).id == Key.of(secret).id != _key().id
    assert secret.hex() not in repr(Key.of(secret)) and secret.hex() not in repr(_ring(Key.of(secret)))


def test_wrong_key_names_the_key_id() -> None:
    a, b = _key(), _key()
    sealed = _ring(a).seal(NAME, b"x" * 100)
    with pytest.raises(MissingKey, match=f"key id {a.id}.*have {b.id}"):
        _ring(b).open(NAME, sealed)
    with pytest.raises(MissingKey, match=f"key id {a.id}.*no backup key given"):
        Keyring().open(NAME, sealed)


def test_a_different_key_under_the_same_id_fails_authentication() -> None:
    a = _key()
    sealed = _ring(a).seal(NAME, b"x" * 100)
    impostor = Key(a.id, os.urandom(32))
    with pytest.raises(NotAuthentic, match=f"failed authentication with key id {a.id}"):
        _ring(impostor).open(NAME, sealed)


def test_keyring_picks_the_key_by_id_and_seals_with_the_first() -> None:
    a, b = _key(), _key()
    old = _ring(a).seal(NAME, b"old")
    new = _ring(b, a).seal(NAME, b"new")
    assert b.id.encode() in new[:40]
    ring = _ring(b, a)
    assert ring.open(NAME, old) == b"old" and ring.open(NAME, new) == b"new"


@pytest.mark.parametrize("cut", [3, 5, 6, 10, 30, 40])
def test_truncated_header_or_body(cut: int) -> None:
    key = _key()
    sealed = _ring(key).seal(NAME, b"y" * 64)
    with pytest.raises(SealError):
        _ring(key).open(NAME, sealed[:cut] if cut > 4 else MAGIC[:cut])


def test_truncated_tag() -> None:
    key = _key()
    sealed = _ring(key).seal(NAME, b"y" * 64)
    with pytest.raises(NotAuthentic):
        _ring(key).open(NAME, sealed[:-1])


def test_every_flipped_byte_is_detected() -> None:
    key = _key()
    sealed = _ring(key).seal(NAME, b"z" * 48)
    for i in range(len(sealed)):
        bad = bytearray(sealed)
        bad[i] ^= 0x01
        with pytest.raises(SealError):
            _ring(key).open(NAME, bytes(bad))


def test_wrong_associated_data_another_name() -> None:
    key = _key()
    sealed = _ring(key).seal(NAME, b"pages")
    other = NAME.replace("pg-00001", "pg-00002")
    with pytest.raises(NotAuthentic, match=f"{other} failed authentication"):
        _ring(key).open(other, sealed)


def test_plaintext_objects() -> None:
    body = chunks.encode_marks({"node": "a1", "gen": 1}, [(5, 10)])
    assert Keyring().open(NAME, body) == body  # no keys: an unencrypted backup reads as before
    assert Keyring().seal(NAME, body) == body
    with pytest.raises(NotAuthentic, match="not encrypted"):
        _ring(_key()).open(NAME, body)  # with keys: a planted plaintext object is refused


def test_errors_are_one_line_user_errors() -> None:
    key = _key()
    sealed = _ring(key).seal(NAME, b"q")
    for fn in (lambda: _ring(_key()).open(NAME, sealed), lambda: _ring(key).open("x", sealed)):
        with pytest.raises(UserError) as info:
            fn()
        assert "\n" not in str(info.value)


def test_key_files(tmp_path) -> None:
    secret = os.urandom(32)
    (tmp_path / "hex").write_text(secret.hex() + "\n")
    (tmp_path / "b64").write_text(__import__("base64").b64encode(secret).decode() + "\n")
    (tmp_path / "raw").write_bytes(secret)
    ids = {load_key_file(tmp_path / n).id for n in ("hex", "b64", "raw")}
    assert ids == {Key.of(secret).id}
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(KeyFileError, match="not a backup key") as info:
        load_key_file(tmp_path / "short")
    assert "abcd" not in str(info.value)
    with pytest.raises(KeyFileError, match="missing"):
        load_key_file(tmp_path / "missing")
    made = new_key_file(tmp_path / "new.key")
    assert (tmp_path / "new.key").stat().st_mode & 0o777 == 0o600
    assert parse_key((tmp_path / "new.key").read_bytes()).id == made.id
    with pytest.raises(FileExistsError):
        new_key_file(tmp_path / "new.key")


def test_store_seals_under_the_key_name(tmp_path) -> None:
    key = _key()
    store = open_store(f"file://{tmp_path}", keyring=_ring(key))
    store.put(NAME, b"records")
    assert is_sealed(store.get_raw(NAME)) and store.get(NAME) == b"records"
    # The same bytes under another name (a swap in the bucket) do not open.
    store.put_raw("pg-00001/log/other.chunk", store.get_raw(NAME))
    with pytest.raises(NotAuthentic):
        store.get("pg-00001/log/other.chunk")
    with pytest.raises(MissingKey):
        open_store(f"file://{tmp_path}").get(NAME)
