"""Object stores with one interface: S3 (boto3, e.g. MinIO) and a local directory.

URLs: ``s3://bucket/prefix`` (endpoint from ``?endpoint=`` or TIDEMARK_S3_ENDPOINT,
credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the usual boto3 chain) and
``file:///path``. Keys passed in are relative to the backup root (see layout.py).
Puts never overwrite: S3 puts are conditional (If-None-Match: *), file puts use
link-or-fail, so two writers can never replace each other's objects. An S3 server that
answers NotImplemented to conditional puts gets unconditional ones instead, loudly: a
warning in the log, and `conditional_puts` false (the node's /v1/status says it, and
`tidemark playground status` lists it as a problem).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from urllib.parse import ParseResult, parse_qs, urlparse

import structlog

from tidemark_protocol.errors import UserError

from . import layout
from .sealed import NO_KEYS, Keyring

log = structlog.get_logger("tidemark.backup.objstore")


class Exists(Exception):
    """The key is already taken (objects are immutable)."""


class ObjStore:
    """put/get seal and open bodies with `keyring` (sealed.py; no keys: stored as given);
    subclasses move bytes (put_raw/get_raw)."""

    url: str
    conditional_puts: bool = True  # False: a put may overwrite an existing object (see S3Store)
    keyring: Keyring = NO_KEYS

    def put(self, key: str, data: bytes) -> None:
        self.put_raw(key, self.keyring.seal(key, data))

    def get(self, key: str) -> bytes:
        return self.keyring.open(key, self.get_raw(key))

    def put_raw(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def get_raw(self, key: str) -> bytes:
        raise NotImplementedError

    def list(self, prefix: str = "") -> list[layout.Obj]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError


class FileStore(ObjStore):
    def __init__(self, url: str, root: Path) -> None:
        self.url = url
        self.root = root / layout.ROOT

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not str(path).startswith(str(self.root.resolve())):
            raise ValueError(f"key {key!r} escapes the store")
        return path

    def put_raw(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        tmp.write_bytes(data)
        try:
            os.link(tmp, path)
        except FileExistsError as exc:
            raise Exists(key) from exc
        finally:
            tmp.unlink(missing_ok=True)

    def get_raw(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise KeyError(key) from exc

    def list(self, prefix: str = "") -> list[layout.Obj]:
        out = []
        base = self.root
        if not base.exists():
            return out
        for dirpath, _dirs, files in os.walk(base):
            for f in files:
                if f.startswith("."):
                    continue
                p = Path(dirpath) / f
                rel = p.relative_to(base).as_posix()
                if rel.startswith(prefix):
                    st = p.stat()
                    out.append(layout.parse(rel, st.st_size, st.st_mtime))
        out.sort(key=lambda o: o.key)
        return out

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class StoreError(UserError, ValueError):
    """The backup target cannot be used as given (a bad URL, no bucket): the user's to fix."""


class S3Store(ObjStore):
    def __init__(self, url: str, bucket: str, prefix: str, endpoint: str | None,
                 access_key: str | None = None, secret_key: str | None = None,
                 region: str | None = None, timeout: float = 5.0) -> None:
        import boto3
        from botocore.config import Config

        self.url = url
        self.bucket = bucket
        self.base = layout.join(prefix, "")
        self.client = boto3.client(
            "s3", endpoint_url=endpoint,
            aws_access_key_id=access_key or os.environ.get("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=secret_key or os.environ.get("AWS_SECRET_ACCESS_KEY"),
            region_name=region or os.environ.get("AWS_REGION", "us-east-1"),
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, max_pool_connections=32,
                          connect_timeout=timeout, read_timeout=max(timeout, 30)),
        )  # fmt: skip
        self.conditional_puts = True

    def put_raw(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        kwargs = {"Bucket": self.bucket, "Key": self.base + key, "Body": data}
        try:
            if self.conditional_puts:
                self.client.put_object(IfNoneMatch="*", **kwargs)
            else:
                self.client.put_object(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise Exists(key) from exc
            if code == "NotImplemented" and self.conditional_puts:
                self._lose_conditional_puts()
                self.client.put_object(**kwargs)
                return
            raise

    def _lose_conditional_puts(self) -> None:
        """The server has no If-None-Match on PUT: go on unconditionally, never silently."""
        self.conditional_puts = False
        log.warning("s3_conditional_puts_unsupported", url=self.url,
                    consequence="puts are unconditional from now on: two writers of one key "
                                "can overwrite each other's objects (the never-overwritten "
                                "guarantee is void); use a server with conditional writes")

    def get_raw(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.base + key)["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise KeyError(key) from exc
            raise

    def list(self, prefix: str = "") -> list[layout.Obj]:
        out = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.base + prefix):
            for item in page.get("Contents", []):
                rel = item["Key"][len(self.base):]
                out.append(layout.parse(rel, int(item["Size"]), item["LastModified"].timestamp()))
        return out

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.base + key)


def check_url(url: str) -> ParseResult:
    """URL parsed if it names a backup target this module can open, else StoreError
    (checked before anything starts: `playground up --backup`, every --from)."""
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.path:
        return parsed
    if parsed.scheme == "s3" and parsed.netloc:
        return parsed
    if parsed.scheme == "s3":
        raise StoreError(f"backup URL {url!r} names no bucket: use s3://bucket/prefix")
    raise StoreError(f"unsupported backup URL {url!r}: use s3://bucket/prefix or file:///path")


def open_store(url: str, endpoint: str | None = None, timeout: float = 5.0,
               keyring: Keyring = NO_KEYS) -> ObjStore:
    """The store at URL; objects sealed/opened with KEYRING (sealed.py)."""
    parsed = check_url(url)
    store: ObjStore
    if parsed.scheme == "file":
        store = FileStore(url, Path(parsed.path))
    else:  # s3: the only other scheme check_url admits
        query = parse_qs(parsed.query)
        endpoint = endpoint or (query.get("endpoint") or [None])[0] or os.environ.get(
            "TIDEMARK_S3_ENDPOINT") or os.environ.get("AWS_ENDPOINT_URL")
        s3 = S3Store(url, parsed.netloc, parsed.path, endpoint, timeout=timeout)
        s3.endpoint = endpoint  # lets a worker process reopen the same store
        store = s3
    store.keyring = keyring
    return store
