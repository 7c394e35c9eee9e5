"""spec.backup / spec.restore / AuroraSnapshot as typed values, the pods' backup
environment (pure: unit-tested without a cluster)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from .spec import Backup, Restore, parse_spec

SNAPSHOT_PLURAL = "aurorasnapshots"
SNAPSHOT_KIND = "AuroraSnapshot"
ACCESS_KEY = "AWS_ACCESS_KEY_ID"
SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
KEY_ITEM = "key"  # the entry of an encryption key Secret
KEY_DIR = "/etc/tidemark/backup-keys"  # pod i-th key file: KEY_DIR/{i}/key


@dataclass(frozen=True)
class StoreRef:
    """Where a backup lives: an s3:// URL (endpoint separate) and the Secret with keys."""

    url: str
    endpoint: str | None = None
    credentials_secret: str | None = None
    key_secrets: tuple[str, ...] = ()  # encryption key Secrets, the current one first

    def to_json(self) -> dict[str, Any]:
        return {"target": self.url, "endpoint": self.endpoint, "credentialsSecret": self.credentials_secret}


def split_target(target: str, endpoint: str | None = None) -> tuple[str, str | None]:
    """(s3://bucket/prefix, endpoint) from either form the CRD accepts:
    `s3://bucket/prefix` (+ endpoint) or `http(s)://host:port/bucket/prefix` (path style).
    `file:///path` passes through (the playground's store; useful off-cluster)."""
    u = urlparse(target)
    if u.scheme in ("s3", "file"):
        return target, endpoint or None
    if u.scheme in ("http", "https"):
        parts = u.path.strip("/").split("/", 1)
        if not parts[0]:
            raise ValueError(f"backup target {target!r} names no bucket")
        prefix = parts[1] if len(parts) > 1 else ""
        return f"s3://{parts[0]}/{prefix}".rstrip("/"), f"{u.scheme}://{u.netloc}"
    raise ValueError(f"unsupported backup target {target!r}")


@dataclass(frozen=True)
class BackupSpec:
    """spec.backup resolved: the store the pods upload to (None: backup is off)."""

    enabled: bool
    store: StoreRef | None
    retention_days: int = Backup.model_fields["retention_days"].default

    @classmethod
    def of(cls, backup: Backup | None) -> BackupSpec:
        b = backup or Backup()
        if not b.enabled or not b.target:
            return cls(False, None, b.retention_days)
        url, endpoint = split_target(b.target, b.endpoint)
        keys = b.encryption.secrets() if b.encryption else ()
        return cls(True, StoreRef(url, endpoint, b.credentials_secret, keys), b.retention_days)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> BackupSpec:
        """From a raw AuroraCluster spec (e.g. another cluster's, read from the apiserver)."""
        return cls.of(parse_spec(spec).backup)


@dataclass(frozen=True)
class RestoreSpec:
    """spec.restore: the source (a backup target, or an AuroraCluster whose backup target
    is used) and the point in time (None: the latest restorable)."""

    source_cluster: str | None
    store: StoreRef | None
    point_in_time: str | None

    @classmethod
    def of(cls, restore: Restore | None) -> RestoreSpec | None:
        if restore is None:
            return None
        src = restore.source
        store = None
        if src.target:
            url, endpoint = split_target(src.target, src.endpoint)
            store = StoreRef(url, endpoint, src.credentials_secret,
                             src.encryption.secrets() if src.encryption else ())
        return cls(src.cluster or None, store, restore.point_in_time or None)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> RestoreSpec | None:
        return cls.of(parse_spec(spec).restore)


def backup_env(backup: BackupSpec) -> list[dict[str, Any]]:
    """Environment of a storage pod for its uploader: endpoint as a value, the keys from
    the Secret (never copied into the pod spec)."""
    if not backup.enabled or backup.store is None:
        return []
    env: list[dict[str, Any]] = []
    if backup.store.endpoint:
        env.append({"name": "TIDEMARK_S3_ENDPOINT", "value": backup.store.endpoint})
    if backup.store.credentials_secret:
        for key in (ACCESS_KEY, SECRET_KEY):
            env.append({"name": key, "valueFrom": {"secretKeyRef": {
                "name": backup.store.credentials_secret, "key": key}}})
    return env


def backup_args(backup: BackupSpec) -> list[str]:
    if not backup.enabled or backup.store is None:
        return []
    keys = [a for i in range(len(backup.store.key_secrets))
            for a in ("--backup-key-file", f"{KEY_DIR}/{i}/{KEY_ITEM}")]
    return ["--backup", backup.store.url, "--backup-retention-days", str(backup.retention_days), *keys]


def backup_key_volumes(backup: BackupSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pod volumes, container mounts) of the encryption key Secrets: files only, read-only,
    group-readable for the pod's fsGroup; the key never enters the pod spec or the env."""
    if not backup.enabled or backup.store is None:
        return [], []
    volumes, mounts = [], []
    for i, secret in enumerate(backup.store.key_secrets):
        volumes.append({"name": f"backup-key-{i}", "secret": {
            "secretName": secret, "items": [{"key": KEY_ITEM, "path": KEY_ITEM}], "defaultMode": 0o440}})
        mounts.append({"name": f"backup-key-{i}", "mountPath": f"{KEY_DIR}/{i}", "readOnly": True})
    return volumes, mounts


def same_store(a: StoreRef | None, b: StoreRef | None) -> bool:
    """Two refs naming the same bucket prefix (a restored cluster must not back up into
    its source's prefix: two volumes' objects would mix)."""
    if a is None or b is None:
        return False
    return a.url.rstrip("/") == b.url.rstrip("/") and (a.endpoint or "") == (b.endpoint or "")
