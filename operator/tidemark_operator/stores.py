"""Opening a cluster's backup store with the keys of the Secret its spec names (blocking:
run in threads, never on kopf's event loop)."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tidemark_backup.objstore import FileStore, ObjStore, S3Store
from tidemark_backup.sealed import Keyring, parse_key

from .backupspec import ACCESS_KEY, KEY_ITEM, SECRET_KEY, StoreRef

_CLIENT_LOCK = threading.Lock()


def read_credentials(core: Any, ns: str, secret: str | None) -> tuple[str | None, str | None]:
    """(access key, secret key) from the Secret (None: the default boto3 chain)."""
    if not secret:
        return None, None
    data = core.read_namespaced_secret(secret, ns, _request_timeout=10).data or {}
    missing = [k for k in (ACCESS_KEY, SECRET_KEY) if k not in data]
    if missing:
        raise ValueError(f"Secret {secret} lacks {', '.join(missing)}")
    return (base64.b64decode(data[ACCESS_KEY]).decode(), base64.b64decode(data[SECRET_KEY]).decode())


def read_keyring(core: Any, ns: str, secrets: tuple[str, ...]) -> Keyring:
    """The encryption keys of REF's key Secrets (entry `key`), the current one first."""
    keys = []
    for name in secrets:
        data = core.read_namespaced_secret(name, ns, _request_timeout=10).data or {}
        if KEY_ITEM not in data:
            raise ValueError(f"Secret {name} lacks {KEY_ITEM}")
        keys.append(parse_key(base64.b64decode(data[KEY_ITEM]), f"Secret {name}"))
    return Keyring(keys)


def open_ref(core: Any, ns: str, ref: StoreRef, timeout: float = 5.0) -> ObjStore:
    """An ObjStore for REF with the Secrets' credentials and encryption keys passed
    explicitly (the operator serves many clusters: never through its own environment)."""
    u = urlparse(ref.url)
    store: ObjStore
    if u.scheme == "file":
        store = FileStore(ref.url, Path(u.path))
    else:
        access, secret = read_credentials(core, ns, ref.credentials_secret)
        with _CLIENT_LOCK:  # boto3's default session is not thread-safe while creating clients
            store = S3Store(ref.url, u.netloc, u.path, ref.endpoint, access, secret, timeout=timeout)
    store.keyring = read_keyring(core, ns, ref.key_secrets)
    return store
