"""spec.backup.encryption -> storage pods: each key Secret mounted as a file and passed as
--backup-key-file (never in the pod spec or env); the operator's own reads get the same
keyring from the Secrets."""

from __future__ import annotations

import base64
import json
import os
from types import SimpleNamespace

import pytest

from tidemark_backup.sealed import Key, KeyFileError
from tidemark_operator.backupspec import (
    BackupSpec,
    RestoreSpec,
    StoreRef,
    backup_args,
    backup_key_volumes,
)
from tidemark_operator.resources import statefulset
from tidemark_operator.spec import parse_spec
from tidemark_operator.stores import open_ref
from tidemark_playground.backup_keys import key_options

pytestmark = [pytest.mark.unit, pytest.mark.security]

SPEC = {"backup": {"enabled": True, "target": "s3://b/p", "credentialsSecret": "creds",
                   "encryption": {"keySecret": "k-new", "previousKeySecrets": ["k-old"]}}}


def test_pods_get_key_files_from_mounted_secrets() -> None:
    backup = BackupSpec.from_spec(SPEC)
    assert backup.store is not None and backup.store.key_secrets == ("k-new", "k-old")
    args = backup_args(backup)
    assert args[-4:] == ["--backup-key-file", "/etc/tidemark/backup-keys/0/key",
                         "--backup-key-file", "/etc/tidemark/backup-keys/1/key"]
    sts = statefulset("db", "ns", "a", parse_spec(SPEC), backup=backup)
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {v["secret"]["secretName"]: v for v in pod["volumes"] if "secret" in v}
    # and the node key (test_node_auth_pods.py) and TLS files (test_node_tls_pods.py)
    assert set(secrets) == {"k-new", "k-old", "db-node-auth", "db-node-tls"}
    del secrets["db-node-auth"], secrets["db-node-tls"]
    assert all(v["secret"]["items"] == [{"key": "key", "path": "key"}] for v in secrets.values())
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/etc/tidemark/backup-keys/0"]["readOnly"] is True
    assert "k-new" not in json.dumps(container["env"])  # keys are files, not environment
    assert "/etc/tidemark/backup-keys/1/key" in container["command"]


def test_no_encryption_no_key_volumes() -> None:
    plain = BackupSpec.from_spec({"backup": {"enabled": True, "target": "s3://b/p", "credentialsSecret": "c"}})
    assert backup_key_volumes(plain) == ([], []) and "--backup-key-file" not in backup_args(plain)


def test_restore_source_keys() -> None:
    r = RestoreSpec.from_spec({"restore": {"source": {"target": "s3://b/p", "encryption": {"keySecret": "k"}}}})
    assert r is not None and r.store is not None and r.store.key_secrets == ("k",)


class _Core:
    def __init__(self, secrets: dict[str, dict[str, bytes]]) -> None:
        self.secrets = secrets

    def read_namespaced_secret(self, name: str, ns: str, _request_timeout: int = 0):
        return SimpleNamespace(data={k: base64.b64encode(v).decode() for k, v in self.secrets[name].items()})


def test_operator_reads_the_keyring_from_the_secrets(tmp_path) -> None:
    new, old = os.urandom(32), os.urandom(32)
    core = _Core({"k-new": {"key": new.hex().encode()}, "k-old": {"key": old}, "bad": {"key": b"short"},
                  "none": {}})
    ref = BackupSpec.from_spec(SPEC).store
    assert ref is not None
    store = open_ref(core, "ns", StoreRef(f"file://{tmp_path}", None, None, ref.key_secrets))
    assert [k.id for k in store.keyring.keys] == [Key.of(new).id, Key.of(old).id]
    with pytest.raises(KeyFileError, match="Secret bad: not a backup key"):
        open_ref(core, "ns", StoreRef(f"file://{tmp_path}", None, None, ("bad",)))
    with pytest.raises(ValueError, match="Secret none lacks key"):
        open_ref(core, "ns", StoreRef(f"file://{tmp_path}", None, None, ("none",)))


def test_playground_key_options(tmp_path) -> None:
    fleet_dir = tmp_path / "fleet"
    made = key_options(fleet_dir, [], True)  # the playground default: a key in DIR
    (path,) = made["backup_key_files"]
    assert path == str((fleet_dir / "backup.key").resolve()) and os.stat(path).st_mode & 0o777 == 0o600
    assert key_options(fleet_dir, [], True) == made  # kept, not replaced, on a second `up`
    assert key_options(tmp_path / "plain", [], False) == {} and not (tmp_path / "plain").exists()
    (tmp_path / "bad.key").write_text("nope")
    with pytest.raises(KeyFileError):
        key_options(tmp_path / "x", [tmp_path / "bad.key"], True)
    assert not (tmp_path / "x").exists()
