"""Opening a cluster's backup store with the keys of the Secret its spec names (blocking:
run in threads, never on kopf's event loop)."""

from __future__ import annotations

import base64
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tidemark_backup.objstore import FileStore, ObjStore, S3Store

from .backupspec import ACCESS_KEY, SECRET_KEY, StoreRef

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


def open_ref(core: Any, ns: str, ref: StoreRef, timeout: float = 5.0) -> ObjStore:
    """An ObjStore for REF with the Secret's keys passed explicitly (the operator serves
    many clusters with different credentials: never through its own environment)."""
    u = urlparse(ref.url)
    if u.scheme == "file":
        return FileStore(ref.url, Path(u.path))
    access, secret = read_credentials(core, ns, ref.credentials_secret)
    with _CLIENT_LOCK:  # boto3's default session is not thread-safe while creating clients
        return S3Store(ref.url, u.netloc, u.path, ref.endpoint, access, secret, timeout=timeout)
