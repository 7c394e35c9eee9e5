"""MinIO on a free loopback port with its own data directory and generated credentials."""

from __future__ import annotations

import json
import os
import secrets
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .procs import ProcessGroup, RigError, free_port, tail, wait_for
from .versions import bin_path

STATE_FILE = "minio.json"


@dataclass(frozen=True)
class MinioInfo:
    """What a test needs to talk S3 to the rig's MinIO."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3},
                          connect_timeout=5, read_timeout=30),
        )


class MinioServer:
    def __init__(self, rig_dir: Path, procs: ProcessGroup | None = None) -> None:
        self.dir = rig_dir.resolve()
        self.data_dir = self.dir / "minio-data"
        self.procs = procs or ProcessGroup(self.dir)
        self.port = 0
        self.console_port = 0
        self.access_key = "tidemark-" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        # Same directory again: keep its credentials, the data was written under them.
        try:
            saved = json.loads((self.dir / STATE_FILE).read_text())
            self.access_key, self.secret_key = saved["access_key"], saved["secret_key"]
        except (OSError, ValueError, KeyError):
            pass

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> float:
        """Start (or restart on the same data dir and port). Returns seconds until healthy."""
        if not os.access(bin_path("minio"), os.X_OK):
            raise RigError(f"missing {bin_path('minio')}; run `tidemark dev install-bins`")
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.port:
            self.port, self.console_port = free_port(), free_port()
        env = dict(os.environ)
        env.update({
            "MINIO_ROOT_USER": self.access_key, "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "MINIO_CI_CD": "1",
        })
        proc = self.procs.start(
            "minio",
            [str(bin_path("minio")), "server", str(self.data_dir),
             f"--address=127.0.0.1:{self.port}", f"--console-address=127.0.0.1:{self.console_port}",
             "--quiet"],
            ports=[self.port, self.console_port], env=env,
        )

        def healthy() -> bool:
            self.procs.check_alive("minio")
            url = f"{self.endpoint}/minio/health/ready"
            with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - loopback
                return resp.status == 200

        wait_for(healthy, timeout, "MinIO /minio/health/ready",
                 on_timeout=lambda: f"--- minio.log ---\n{tail(proc.log)}")
        (self.dir / STATE_FILE).write_text(json.dumps(
            {"endpoint": self.endpoint, "access_key": self.access_key,
             "secret_key": self.secret_key, "data_dir": str(self.data_dir)}, indent=1))
        return time.monotonic() - t0

    def stop(self) -> None:
        # SIGTERM first: MinIO finishes in-flight writes; then SIGKILL.
        self.procs.stop("minio", grace=5.0)

    def restart(self, timeout: float = 60.0) -> float:
        self.stop()
        return self.start(timeout)

    def make_bucket(self, name: str) -> MinioInfo:
        info = MinioInfo(self.endpoint, self.access_key, self.secret_key, name)
        s3 = info.client()
        try:
            s3.create_bucket(Bucket=name)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass  # `cluster up` again on the same directory keeps MinIO's data
        return info

    def info(self, bucket: str) -> MinioInfo:
        return MinioInfo(self.endpoint, self.access_key, self.secret_key, bucket)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self.info(""))
